"""Voice benchmark: reply latency and barge-in latency of a spoken conversation.

    python bench/voice.py --turns 20 --barge 10           # own local cluster (serve_config.yaml)
    python bench/voice.py --turns 3 --barge 2             # quick check (~3 min)
    python bench/voice.py --url http://127.0.0.1:8000     # a running `serve run`

One session with a real aiortc peer whose microphone (`MicTrack`) sends Piper-made questions.

1. **Reply latency** (`--turns`): the mic sends a short question; t_end is the moment the
   packet holding its last speech sample is handed to the client's WebRTC sender. Reply
   latency is the arrival of the first 20 ms audio packet with speech energy after t_end,
   minus t_end: what a user hears, end of their speech to the start of the answer. The
   server's latency marks and the event timestamps split it into stages.
2. **Barge-in latency** (`--barge`): while the avatar speaks a long reply (`say` of a fixed
   text, or an LLM answer to a spoken request), the mic sends a short interruption; t_onset
   is when the packet holding its first speech sample is handed to the sender. Barge-in
   latency is the arrival of the first packet of the silence that lasts to the end of the
   window, minus t_onset.

bench/README.md explains every number. Prints a table and writes bench/results/voice-<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sessions import (  # noqa: E402
    ActorStats,
    CpuMeter,
    loadavg,
    med,
    pct,
    print_machine,
    r,
    server,
    wait_health,
    write_results,
)

from serve_app.client import MIC_PACKET, MIC_RATE, AvatarSession, MicTrack  # noqa: E402
from serve_app.config import PROJECT_ROOT as ROOT  # noqa: E402
from serve_app.engines.audio import StreamResampler, to_int16  # noqa: E402
from serve_app.engines.llm.sentences import SentenceSplitter  # noqa: E402

SPEECH_RMS = 300.0  # int16 scale: a received packet with speech in it
SILENCE_RMS = 30.0  # int16 scale: a received packet that is silent (Opus-decoded zeros are ~0)
TRIM_LEVEL = 0.003  # |sample| (float, after the 0.7 gain) below this at the ends is silence: -50 dBFS
MIC_GAIN = 0.7  # as in tests/integration/test_voice.py
TARGET_REPLY_P50_MS = 1000.0
TARGET_BARGE_MS = 300.0

QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "What color is the sky?",
    "Can you recommend a good book?",
    "What is your name?",
    "How are you today?",
    "What is the biggest animal?",
    "Tell me a fun fact.",
]
LONG_REQUEST = "Please tell me a long story about a dragon who learns to fly over the sea."
LONG_SAY = (
    "Once upon a time, in a small village by the sea, there lived a young dragon called Ember. "
    "Every morning she watched the gulls glide over the waves and wished that she could fly "
    "like them. Her wings were still small, and the wind off the water was strong and cold. "
    "So she practised every day, first on the low dunes and then from the tall cliffs. "
    "One day, a great storm came in from the west, and a fishing boat was caught far out "
    "at sea. Ember spread her wings, jumped from the cliff, and flew into the storm."
)
INTERRUPTIONS = ["Wait, stop.", "Hold on a second.", "Sorry, excuse me.", "Stop please."]


# --- spoken clips -------------------------------------------------------------------------
@dataclass
class Clip:
    """Mic audio, int16 48 kHz, laid out on the MicTrack's 20 ms packet grid: sent into an
    empty queue, sample 0 starts a packet."""

    text: str
    audio: np.ndarray
    speech_start: int  # first speech sample
    speech_end: int  # one past the last speech sample

    @property
    def speech_s(self) -> float:
        return (self.speech_end - self.speech_start) / MIC_RATE


async def synthesize(tts, text: str) -> np.ndarray:
    """Piper speech resampled to 48 kHz float32, as tests/integration/test_voice.py makes it."""
    resampler, parts = None, []
    async for chunk in tts.stream(text):
        resampler = resampler or StreamResampler(chunk.sample_rate, MIC_RATE)
        parts.append(resampler.push(chunk.samples))
    parts.append(resampler.flush())
    return np.concatenate(parts)


async def make_clip(tts, text: str, align: str) -> Clip:
    """Trim Piper's leading and trailing silence at TRIM_LEVEL. align="end": zeros in front so
    the speech ends exactly at the end of the last packet (t_end = when that packet is sent);
    align="start": the speech starts at sample 0 (t_onset = when the first packet is sent)."""
    x = await synthesize(tts, text) * MIC_GAIN
    loud = np.flatnonzero(np.abs(x) > TRIM_LEVEL)
    speech = to_int16(x[loud[0] : loud[-1] + 1])
    pad = -len(speech) % MIC_PACKET
    if align == "end":
        audio = np.concatenate([np.zeros(pad, np.int16), speech])
        return Clip(text, audio, pad, len(audio))
    audio = np.concatenate([speech, np.zeros(pad, np.int16)])
    return Clip(text, audio, 0, len(speech))


def packet_rms(pcm16: np.ndarray) -> np.ndarray:
    n = len(pcm16) // MIC_PACKET * MIC_PACKET
    x = pcm16[:n].astype(np.float32).reshape(-1, MIC_PACKET)
    return np.sqrt((x**2).mean(axis=1))


async def piper_lead_ms(tts, text: str) -> float | None:
    """Where the first speech packet (RMS > SPEECH_RMS) of `text` lies in the server's output:
    the session turns TTS audio into 48 kHz units whose packets start at the audio's sample 0,
    so this is the silence Piper puts in front of the first sentence, on the packet grid.
    Piper's synthesis is slightly random; this is an estimate from a fresh synthesis."""
    rms = packet_rms(to_int16(await synthesize(tts, text)))
    loud = np.flatnonzero(rms > SPEECH_RMS)
    return float(loud[0] * 20) if len(loud) else None


# --- the session --------------------------------------------------------------------------
class Bench:
    def __init__(self, url: str, args) -> None:
        self.mic = MicTrack()
        self.s = AvatarSession(url, mic=self.mic)
        self.args = args
        # Server events carry `t`, the server's time.time() in ms; on the same host it converts
        # to this process's time.monotonic() with the offset between the two clocks.
        host = urlparse(url).hostname or ""
        self.same_host = host in ("127.0.0.1", "localhost", "::1")

    def wall_to_mono(self, t_ms: float) -> float:
        return t_ms / 1000 - (time.time() - time.monotonic())

    async def open(self) -> float:
        t0 = time.monotonic()
        await self.s.start(timeout=90)
        ready = time.monotonic() - t0
        await self.s.interrupt()  # skip the greeting
        return ready

    def events(self, kind: str, since: float = 0.0, **match) -> list[dict]:
        return [
            e for e in self.s.received.events
            if e["type"] == kind and e["received_at"] >= since and all(e.get(k) == v for k, v in match.items())
        ]

    async def wait_event(self, kind: str, since: float, timeout: float, **match) -> dict | None:
        with contextlib.suppress(asyncio.TimeoutError):
            return await self.s.wait_event(
                lambda e: e["type"] == kind and e["received_at"] >= since
                and all(e.get(k) == v for k, v in match.items()),
                timeout=timeout,
            )
        return None

    async def settle(self, packets: int = 15) -> None:
        """Nothing in progress and `packets` x 20 ms of silence at the client: cut whatever the
        avatar is doing (POST /interrupt), wait for its `state: idle`, then for the silence."""
        mark = time.monotonic()
        if (await self.s.interrupt()).get("interrupted"):
            await self.wait_event("state", mark, 10, state="idle")
        n = len(self.s.received.audio)
        with contextlib.suppress(asyncio.TimeoutError):
            await self.s.wait_until(
                lambda rc: len(rc.audio) >= n + packets and all(a.rms < SILENCE_RMS for a in rc.audio[-packets:]),
                timeout=10,
            )
        while self.mic.queued_s() > 0:  # the mic has sent everything
            await asyncio.sleep(0.02)
        await asyncio.sleep(self.args.pause)

    async def first_audio(self, since: float, n_from: int, level: float, count: int, timeout: float):
        """The `count`-th received packet louder than `level` arriving after `since`."""
        def found(rc) -> bool:
            return sum(a.t > since and a.rms > level for a in rc.audio[n_from:]) >= count
        await self.s.wait_until(found, timeout=timeout)
        return [a for a in self.s.received.audio[n_from:] if a.t > since and a.rms > level][count - 1]

    # --- 1. reply latency -------------------------------------------------------------
    async def reply_turn(self, k: int, clip: Clip, t_base: float) -> dict:
        rec: dict = {"k": k, "question": clip.text, "question_speech_s": round(clip.speech_s, 3)}
        try:
            await self.settle()
            n_audio = len(self.s.received.audio)
            t_play = time.monotonic()
            self.mic.play(clip.audio)  # the queue is empty: sample 0 starts the next packet
            t_end = await self.mic.drained()  # the packet ending with the last speech sample went out
            rec["t_end_s"] = round(t_end - t_base, 3)
            first = await self.first_audio(t_end, n_audio, SPEECH_RMS, 1, self.args.reply_timeout)
            rec["reply_ms"] = round((first.t - t_end) * 1000, 1)
            rec["first_packet_rms"] = round(first.rms)
            thinking = self.events("state", t_play, state="thinking")
            rec["utterances"] = len(thinking)  # more than 1: the VAD split the question
            if not thinking:
                raise RuntimeError("no `state: thinking` event before the reply")
            think = thinking[-1]
            turn_id = think["turn_id"]
            rec["turn_id"] = turn_id
            lat = await self.wait_event("latency", t_play, 10, turn_id=turn_id)
            await asyncio.sleep(self.args.listen)  # let the answer play a little
            heard = self.events("user_transcript", t_play, turn_id=turn_id)
            rec["transcript"] = heard[0]["text"] if heard else None
            deltas = self.events("assistant_text", t_play, turn_id=turn_id)
            rec["reply_text"] = "".join(d["text"] for d in deltas)
            rec["thinking_client_ms"] = round((think["received_at"] - t_end) * 1000, 1)
            if lat is None:
                raise RuntimeError("no latency event")
            marks = lat["marks"]
            rec["marks"] = marks
            # The first piece the sentence splitter handed to TTS, and the delta completing it.
            splitter, piece, piece_delta = SentenceSplitter(), None, None
            for d in deltas:
                done = splitter.push(d["text"])
                if done:
                    piece, piece_delta = done[0], d
                    break
            if piece is None:  # the whole reply was one piece: complete when the stream ended,
                rest = splitter.flush()  # which is just after its last delta (one more token)
                piece = rest[0] if rest else None
                piece_delta = deltas[-1] if rest else None
                rec["first_piece_at_stream_end"] = True
            rec["first_piece"] = piece
            if self.same_host:
                speech_end = self.wall_to_mono(lat["t"]) - marks["first_frame_sent"] / 1000
                rec["speech_end_offset_ms"] = round((speech_end - t_end) * 1000, 1)
                rec["thinking_server_ms"] = round((self.wall_to_mono(think["t"]) - t_end) * 1000, 1)
                if piece_delta is not None:
                    rec["first_piece_mark_ms"] = round((self.wall_to_mono(piece_delta["t"]) - speech_end) * 1000, 1)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports what it can
            rec["error"] = f"{type(exc).__name__}: {exc}"
        return rec

    # --- 2. barge-in latency ----------------------------------------------------------
    async def barge_trial(self, i: int, mode: str, request: Clip, stop: Clip, t_base: float) -> dict:
        rec: dict = {"i": i, "mode": mode, "interruption": stop.text}
        try:
            await self.settle()
            n_audio = len(self.s.received.audio)
            t_start = time.monotonic()
            if mode == "say":
                turn_id = await self.s.say(LONG_SAY)
            else:
                self.mic.play(request.audio)
                think = await self.wait_event("state", t_start, 30, state="thinking")
                if think is None:
                    raise RuntimeError("the long request made no turn")
                turn_id = think["turn_id"]
            rec["turn_id"] = turn_id
            # Reply speech is arriving; then wait a little more (varied, so the interruption
            # falls at different places in the words).
            await self.first_audio(t_start, n_audio, SPEECH_RMS, 10, 40)
            await asyncio.sleep(0.3 + (i * 0.37) % 1.0)
            if self.events("turn_end", t_start, turn_id=turn_id):
                raise RuntimeError("the reply ended before the interruption")
            # Onset: the first packet of `stop` (speech from sample 0) is sent at t_onset.
            assert self.mic.queued_s() == 0
            sent0 = self.mic.sent_samples
            self.mic.play(stop.audio[:MIC_PACKET])
            onset = asyncio.ensure_future(self.mic.drained())
            await asyncio.sleep(0)  # drained() registers its mark: the end of that first packet
            late_mark = self.mic.sent_samples != sent0  # the packet left before the mark existed
            self.mic.play(stop.audio[MIC_PACKET:])
            t_onset = await onset - (MIC_PACKET / MIC_RATE if late_mark else 0.0)
            rec["onset_estimated"] = late_mark
            rec["t_onset_s"] = round(t_onset - t_base, 3)
            barge = await self.wait_event("barge_in", t_onset, 5)
            cut = await self.wait_event("turn_end", t_onset, 5, turn_id=turn_id)
            rec["old_turn_interrupted"] = None if cut is None else cut["interrupted"]
        except Exception as exc:  # noqa: BLE001
            rec["error"] = f"{type(exc).__name__}: {exc}"
            return rec
        # The window ends when the reply to the interruption starts (its `speaking` event: its
        # audio arrives no earlier) or after --barge-window seconds.
        speaking = None
        with contextlib.suppress(asyncio.TimeoutError):
            speaking = await self.s.wait_event(
                lambda e: e["type"] == "state" and e["state"] == "speaking" and e.get("turn_id") != turn_id
                and e["received_at"] > t_onset,
                timeout=max(t_onset + self.args.barge_window - time.monotonic(), 0.01),
            )
        window_end = min(t_onset + self.args.barge_window, speaking["received_at"] if speaking else float("inf"))
        while time.monotonic() < window_end:
            await asyncio.sleep(0.05)
        rec["window_ms"] = round((window_end - t_onset) * 1000, 1)
        window = [a for a in self.s.received.audio[n_audio:] if t_onset <= a.t < window_end]
        loud = [j for j, a in enumerate(window) if a.rms >= SILENCE_RMS]
        rec["loud_packets_after_onset"] = sum(a.rms > SPEECH_RMS for a in window)
        if barge is None:
            rec["error"] = "no barge_in event"
        elif not loud:
            rec["error"] = "no reply audio after the onset (the reply was in a pause?)"
        elif loud[-1] + 10 >= len(window):
            rec["error"] = f"audio not silent for 200 ms before the window's end ({rec['window_ms']} ms)"
        else:
            rec["last_loud_ms"] = round((window[loud[-1]].t - t_onset) * 1000, 1)
            rec["barge_ms"] = round((window[loud[-1] + 1].t - t_onset) * 1000, 1)
            rec["server_client_ms"] = round((barge["received_at"] - t_onset) * 1000, 1)
            # The reply went silent before the barge_in event arrived: a pause between its words
            # or sentences, or a server that pauses speech before the VAD confirms the onset.
            rec["silent_before_event"] = rec["last_loud_ms"] < rec["server_client_ms"]
            if self.same_host:
                rec["server_ms"] = round((self.wall_to_mono(barge["t"]) - t_onset) * 1000, 1)
        return rec


# --- analysis -----------------------------------------------------------------------------
def turn_stages(t: dict) -> dict | None:
    """One turn's stage durations (ms). See bench/README.md."""
    m = t.get("marks")
    if "reply_ms" not in t or not m:
        return None
    row = {"reply": t["reply_ms"], "thinking_client": t["thinking_client_ms"]}
    off = t.get("speech_end_offset_ms")
    if off is not None:
        row["speech_end_offset"] = off
        row["net_jitter"] = t["reply_ms"] - m["first_frame_sent"] - off
        if t.get("piper_lead_ms") is not None:
            row["piper_lead"] = t["piper_lead_ms"]
            row["net_jitter_only"] = row["net_jitter"] - t["piper_lead_ms"]
    if "end_confirmed" in m:
        row["vad_confirm"] = m["end_confirmed"]
    if "asr_done" in m:
        row["asr"] = m["asr_done"]
    if "asr_done" in m and "llm_first_token" in m:
        row["llm_first_token"] = m["llm_first_token"] - m["asr_done"]
    if "llm_first_token" in m and "tts_first_audio" in m:
        row["first_sentence_tts"] = m["tts_first_audio"] - m["llm_first_token"]
        if t.get("first_piece_mark_ms") is not None:
            row["llm_first_piece"] = t["first_piece_mark_ms"] - m["llm_first_token"]
            row["tts_first_piece"] = m["tts_first_audio"] - t["first_piece_mark_ms"]
    if "tts_first_audio" in m:
        row["lipsync_queue"] = m["first_frame_sent"] - m["tts_first_audio"]
    return {k: round(v, 1) for k, v in row.items()}


def stages(turns: list[dict]) -> dict:
    """Medians of the per-turn stage durations."""
    rows = [row for t in turns if (row := turn_stages(t))]
    keys = dict.fromkeys(k for row in rows for k in row)
    return {k: r(med([row[k] for row in rows if k in row])) for k in keys}


def history_full(report: dict, t: dict) -> bool:
    """Whether the conversation history had reached `history_turns` exchanges before this turn,
    so that recording the last one dropped the oldest: the prompt's prefix changed."""
    return report["history_turns"] is not None and report["warmup"] + t["k"] > report["history_turns"]


def fmt(x, nd: int = 0) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def summarize(report: dict) -> None:
    turns = [t for t in report["reply_turns"] if not t.get("warmup")]
    ok = [t for t in turns if "reply_ms" in t]
    lat = [t["reply_ms"] for t in ok]
    marks: dict[str, list[float]] = {}
    for t in ok:
        for k, v in t.get("marks", {}).items():
            marks.setdefault(k, []).append(v)
    st = stages(ok)
    trials = report["barge_trials"]
    good = [t for t in trials if "barge_ms" in t]
    barge = [t["barge_ms"] for t in good]
    server = [t["server_client_ms"] for t in good]
    server_srv = [t["server_ms"] for t in good if "server_ms" in t]
    summary = {
        "reply_turns": len(turns),
        "reply_ok": len(ok),
        "reply_errors": [t["error"] for t in turns if "error" in t],
        "reply_ms": {"p50": r(pct(lat, 0.5)), "p95": r(pct(lat, 0.95)),
                     "min": r(min(lat)) if lat else None, "max": r(max(lat)) if lat else None},
        "server_marks_ms_median": {k: r(med(v)) for k, v in marks.items()},
        "stages_ms_median": st,
        "split_questions": sum(t.get("utterances", 1) > 1 for t in ok),
        "barge_trials": len(trials),
        "barge_ok": len(good),
        "barge_errors": [t["error"] for t in trials if "error" in t],
        "barge_ms": {"p50": r(pct(barge, 0.5)), "p95": r(pct(barge, 0.95)),
                     "min": r(min(barge)) if barge else None, "max": r(max(barge)) if barge else None},
        "barge_last_loud_ms_p50": r(pct([t["last_loud_ms"] for t in good], 0.5)),
        "barge_server_client_ms": {"p50": r(pct(server, 0.5)), "p95": r(pct(server, 0.95))},
        "barge_server_ms": {"p50": r(pct(server_srv, 0.5)), "p95": r(pct(server_srv, 0.95))},
        "barge_silent_before_event": sum(t["silent_before_event"] for t in good),
        "barge_ms_after_event_only_p50": r(pct([t["barge_ms"] for t in good if not t["silent_before_event"]], 0.5)),
        "barge_ms_by_mode": {
            mode: r(pct([t["barge_ms"] for t in good if t["mode"] == mode], 0.5)) for mode in ("say", "llm")
        },
    }
    regimes = {}
    for name, full in (("history_growing", False), ("history_full", True)):
        sel = [t for t in ok if history_full(report, t) == full]
        regimes[name] = {
            "turns": len(sel),
            "reply_ms_p50": r(pct([t["reply_ms"] for t in sel], 0.5)),
            "llm_first_token_ms_median": r(med([row["llm_first_token"] for t in sel
                                                if "llm_first_token" in (row := turn_stages(t) or {})])),
        }
    summary["by_history"] = regimes
    summary["targets"] = {
        "reply_p50_le_1000ms": None if not lat else summary["reply_ms"]["p50"] <= TARGET_REPLY_P50_MS,
        "barge_p50_le_300ms": None if not barge else summary["barge_ms"]["p50"] <= TARGET_BARGE_MS,
        "barge_p95_le_300ms": None if not barge else summary["barge_ms"]["p95"] <= TARGET_BARGE_MS,
    }
    report["summary"] = summary

    print("\n=== Reply latency: end of the question's speech (sent) -> first reply speech packet received")
    print(f"  turns {len(ok)} of {len(turns)} measured"
          + (f" ({len(turns) - len(ok)} failed: {summary['reply_errors']})" if len(ok) < len(turns) else "")
          + (f"; {summary['split_questions']} questions split by the VAD" if summary["split_questions"] else ""))
    rm = summary["reply_ms"]
    print(f"  reply ms   p50 {fmt(rm['p50'])}   p95 {fmt(rm['p95'])}   min {fmt(rm['min'])}   max {fmt(rm['max'])}")
    mk = summary["server_marks_ms_median"]
    print("  server marks (median ms since the server's speech_end): "
          + ", ".join(f"{k} {fmt(mk.get(k))}" for k in ("asr_done", "llm_first_token", "tts_first_audio", "first_frame_sent")))
    print("  where the time goes (median of per-turn durations, ms):")
    rows = [
        ("speech_end_offset", "server speech_end - t_end (mic uplink + aiortc jitter buffer + VAD end placement)"),
        ("asr", "pause until the reply starts (speculation) + ASR (asr_done)"),
        ("llm_first_token", "LLM first token (llm_first_token - asr_done)"),
        ("first_sentence_tts", "first sentence TTS (tts_first_audio - llm_first_token), of which:"),
        ("llm_first_piece", "   LLM until the first sentence/clause is complete"),
        ("tts_first_piece", "   Piper synthesizing it (whole piece) + transfer"),
        ("lipsync_queue", "lip-sync + A/V queue (first_frame_sent - tts_first_audio)"),
        ("net_jitter", "network + jitter buffer (reply - first_frame_sent - speech_end_offset), of which:"),
        ("piper_lead", "   Piper's leading silence (re-synthesized first piece, 20 ms grid)"),
        ("net_jitter_only", "   Opus + network + client jitter buffer"),
        ("vad_confirm", "in parallel: the VAD confirms the end of speech (end_confirmed)"),
        ("thinking_client", "for reference: t_end -> `state: thinking` received (VAD as the client sees it)"),
    ]
    for key, label in rows:
        if key in st:
            print(f"    {label:<84} {fmt(st[key]):>6}")
    print("    (per turn, speech_end offset + ASR + LLM first token + first sentence TTS + lip-sync\n"
          "     + network = its reply ms exactly; the medians of the parts need not add up to the median)")

    g, f = summary["by_history"]["history_growing"], summary["by_history"]["history_full"]
    if report["history_turns"] is not None and g["turns"] and f["turns"]:
        print(f"  by conversation history (llm.history_turns {report['history_turns']}): still growing "
              f"({g['turns']} turns) reply p50 {fmt(g['reply_ms_p50'])}, LLM first token {fmt(g['llm_first_token_ms_median'])};"
              f" full, oldest exchange dropped each turn ({f['turns']} turns) reply p50 {fmt(f['reply_ms_p50'])},"
              f" LLM first token {fmt(f['llm_first_token_ms_median'])}")
    print("\n=== Barge-in latency: interruption's first speech sample sent -> reply silent at the client")
    print(f"  trials {len(good)} of {len(trials)} measured"
          + (f" (failed: {summary['barge_errors']})" if len(good) < len(trials) else ""))
    bm = summary["barge_ms"]
    print(f"  barge-in ms  p50 {fmt(bm['p50'])}   p95 {fmt(bm['p95'])}   min {fmt(bm['min'])}   max {fmt(bm['max'])}"
          f"   (by reply kind: say {fmt(summary['barge_ms_by_mode']['say'])}, llm {fmt(summary['barge_ms_by_mode']['llm'])})")
    if summary["barge_silent_before_event"]:
        print(f"  {summary['barge_silent_before_event']} trial(s) silent before the barge_in event arrived (a pause in"
              f" the reply, or speech held at the first voiced frame); p50 of the others"
              f" {fmt(summary['barge_ms_after_event_only_p50'])}")
    print(f"  server part: barge_in event received  p50 {fmt(summary['barge_server_client_ms']['p50'])}"
          f"   p95 {fmt(summary['barge_server_client_ms']['p95'])}"
          f"   (emitted on the server: p50 {fmt(summary['barge_server_ms']['p50'])})")

    cpu = report.get("cpu", {})
    if cpu:
        print("\n  CPU (cores)                  : " + "; ".join(
            f"{phase}: machine {c['machine_cores']:.2f}, server {c['server_cores']:.2f}, bench {c['bench_process_cores']:.2f}"
            for phase, c in cpu.items()))

    def verdict(ok_: bool | None) -> str:
        return "-" if ok_ is None else ("PASS" if ok_ else "MISS")

    tg = summary["targets"]
    print("\nSummary")
    print(f"  {'measure':<34}{'p50':>8}{'p95':>8}{'min':>8}{'max':>8}   target          result")
    print(f"  {'reply latency (ms)':<34}{fmt(rm['p50']):>8}{fmt(rm['p95']):>8}{fmt(rm['min']):>8}{fmt(rm['max']):>8}"
          f"   p50 <= {TARGET_REPLY_P50_MS:.0f}     {verdict(tg['reply_p50_le_1000ms'])}")
    print(f"  {'barge-in latency (ms)':<34}{fmt(bm['p50']):>8}{fmt(bm['p95']):>8}{fmt(bm['min']):>8}{fmt(bm['max']):>8}"
          f"   p50 <= {TARGET_BARGE_MS:.0f}      {verdict(tg['barge_p50_le_300ms'])}"
          f" (p95: {verdict(tg['barge_p95_le_300ms'])})")
    sc = summary["barge_server_client_ms"]
    print(f"  {'barge-in, server part (ms)':<34}{fmt(sc['p50']):>8}{fmt(sc['p95']):>8}")


# --- main ---------------------------------------------------------------------------------
async def measure(url: str, args, clips: dict, meter: CpuMeter, actors: ActorStats) -> dict:
    h = await wait_health(url, lambda h: h.get("warm_actors", 0) >= 1, 60)
    print(f"server: {url}  profile {h.get('profile')}", flush=True)
    b = Bench(url, args)
    report: dict = {"url": url, "same_host_clocks": b.same_host, "reply_turns": [], "barge_trials": [], "cpu": {}}
    try:
        report["ready_s"] = round(await b.open(), 2)
        await asyncio.sleep(2)
        stats_a = await actors.get(b.s.session_id)
        t_base = time.monotonic()
        questions, n = clips["questions"], args.turns
        print(f"reply latency: {args.warmup} warm-up + {n} turns ...", flush=True)
        a = meter.snapshot()
        for k in range(-args.warmup, n):
            rec = await b.reply_turn(k, questions[k % len(questions)], t_base)
            rec["warmup"] = k < 0
            report["reply_turns"].append(rec)
            print(f"  {'warm-up' if k < 0 else f'turn {k + 1:>2}'}: " + turn_line(rec), flush=True)
        report["cpu"]["reply"] = meter.window(a, meter.snapshot())
        await b.settle()

        print(f"barge-in: {args.barge} trials ({args.barge_llm} with an LLM answer) ...", flush=True)
        n_llm = min(args.barge_llm, args.barge)
        llm_at = {int((j + 0.5) * args.barge / n_llm) for j in range(n_llm)} if n_llm else set()
        a = meter.snapshot()
        measured, i = 0, 0
        # A trial that could not be measured (e.g. a short LLM answer ended before the
        # interruption) is repeated, up to 5 extra trials, so that --barge trials are measured.
        while measured < args.barge and i < args.barge + 5:
            mode = "llm" if measured in llm_at else "say"
            stop = clips["interruptions"][i % len(clips["interruptions"])]
            rec = await b.barge_trial(i, mode, clips["request"], stop, t_base)
            report["barge_trials"].append(rec)
            measured += "barge_ms" in rec
            i += 1
            print(f"  trial {i:>2} ({mode}): "
                  + (f"{rec['barge_ms']:6.1f} ms  (barge_in event {rec['server_client_ms']:.0f} ms, last loud "
                     f"packet {rec['last_loud_ms']:.0f} ms, {rec['loud_packets_after_onset']} speech packets after "
                     f"the onset; {stop.text!r})" + ("  [silent before the barge_in event]"
                                                     if rec["silent_before_event"] else "")
                     if "barge_ms" in rec else f"ERROR {rec.get('error')}"), flush=True)
        report["cpu"]["barge"] = meter.window(a, meter.snapshot())
        await b.settle()
        stats_b = await actors.get(b.s.session_id)
        if stats_a and stats_b:
            report["actor_stats"] = {k: stats_b[k] - stats_a[k] for k in ("video_frames", "speech_frames", "late_frames")}
    finally:
        await b.s.close()
    return report


def turn_line(rec: dict) -> str:
    if "reply_ms" not in rec:
        return f"ERROR {rec.get('error')}"
    st = turn_stages(rec) or {}
    parts = [f"{name} {fmt(st.get(key))}" for name, key in (
        ("end_off", "speech_end_offset"), ("asr", "asr"), ("llm", "llm_first_token"),
        ("tts", "first_sentence_tts"), ("lip", "lipsync_queue"), ("net", "net_jitter"), ("| vad", "vad_confirm"))]
    return (f"{rec['reply_ms']:6.0f} ms = {' '.join(parts)}   heard {rec.get('transcript')!r}"
            f" -> {rec.get('first_piece')!r}")


async def prepare(tts) -> dict:
    return {
        "questions": [await make_clip(tts, q, "end") for q in QUESTIONS],
        "request": await make_clip(tts, LONG_REQUEST, "end"),
        "interruptions": [await make_clip(tts, q, "start") for q in INTERRUPTIONS],
    }


async def add_piper_leads(tts, report: dict) -> None:
    cache: dict[str, float | None] = {}
    for t in report["reply_turns"]:
        piece = t.get("first_piece")
        if piece:
            if piece not in cache:
                cache[piece] = await piper_lead_ms(tts, piece)
            t["piper_lead_ms"] = cache[piece]


def source_state() -> dict[str, float]:
    """mtimes of the server's sources and configs: a run whose code or config changed while it
    ran (processes start at different times) is flagged."""
    files = [*ROOT.glob("actors/**/*.py"), *ROOT.glob("serve_app/**/*.py"), *ROOT.glob("configs/**/*.yaml"),
             *ROOT.glob("*.yaml")]
    return {str(f.relative_to(ROOT)): f.stat().st_mtime for f in files if f.is_file()}


def git_state() -> dict:
    """The commit and the files that differ from it (read-only git calls)."""
    import subprocess

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", *cmd], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.rstrip("\n")

    with contextlib.suppress(Exception):
        return {"commit": git("rev-parse", "--short", "HEAD"),
                "dirty": [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]}
    return {}


def history_turns(config: Path) -> int | None:
    """`llm.history_turns` of the deployed profile (with --url: of --config's, if the same)."""
    with contextlib.suppress(Exception):
        import yaml

        from serve_app.config import load_profile

        app = yaml.safe_load(Path(config).read_text())["applications"][0]
        return load_profile(ROOT / app["args"]["profile"]).llm.history_turns
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=20, help="measured question/answer turns")
    parser.add_argument("--warmup", type=int, default=1, help="turns before them, not counted")
    parser.add_argument("--barge", type=int, default=10, help="barge-in trials")
    parser.add_argument("--barge-llm", type=int, default=4, help="of them, interrupting an LLM answer (the rest: say)")
    parser.add_argument("--barge-window", type=float, default=3.0, help="s after the onset checked for silence")
    parser.add_argument("--listen", type=float, default=1.0, help="s of each answer heard before it is cut")
    parser.add_argument("--pause", type=float, default=0.5, help="s of quiet between turns")
    parser.add_argument("--reply-timeout", type=float, default=30.0)
    parser.add_argument("--url", help="a running server; default: start a local cluster")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    args = parser.parse_args()

    machine, load_before = print_machine()
    sources, git, hist = source_state(), git_state(), history_turns(args.config)
    print(f"code: commit {git.get('commit')}"
          + (f", uncommitted changes in {len(git['dirty'])} files" if git.get("dirty") else "")
          + f"; llm.history_turns {hist}", flush=True)
    from serve_app.engines.tts.piper_tts import PiperTTS

    tts = PiperTTS()  # the mic's voice, made here before the server starts
    clips = asyncio.run(prepare(tts))
    print("questions: " + ", ".join(f"{c.text!r} {c.speech_s:.2f} s" for c in clips["questions"]), flush=True)

    with server(args.url, args.config) as (url, local, ray_ok):
        load_start = loadavg()
        print(f"load at the start of measuring: {load_start}", flush=True)
        report = asyncio.run(measure(url, args, clips, CpuMeter(local_cluster=local), ActorStats(ray_ok)))
    load_after = loadavg()
    changed = sorted(f for f, m in source_state().items() if sources.get(f) != m)
    asyncio.run(add_piper_leads(tts, report))  # after the server is gone: no CPU contention
    report.update({
        "machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
        "load_before": load_before, "load_start": load_start, "load_after": load_after,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "questions": {c.text: round(c.speech_s, 3) for c in clips["questions"]},
        "warmup": args.warmup, "history_turns": hist, "git": git, "sources_changed_during_run": changed,
    })
    summarize(report)
    print(f"\nload average: before {load_before}, measuring started at {load_start}, after {load_after}")
    if changed:
        print(f"WARNING: server sources or configs changed during the run, the numbers may mix versions: {changed}")
    out = write_results("voice", report)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
