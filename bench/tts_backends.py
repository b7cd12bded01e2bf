"""Our own overhead per TTS backend: the backend's first audio -> the session's first frame sent.

    python bench/tts_backends.py --repeats 10

Every backend runs against its fake server (tests/fakes/tts_servers.py) in this process, so
the servers' own synthesis time is out of the figure: the clock starts when the fake has
written a reply's first audio to its socket (time.monotonic(), one clock for all processes
on Linux) and stops at the session's `first_frame_sent` mark, taken on the session's clock
as a latency event's offset from the `say` request. Between the two: the backend client
(websocket / HTTP, MP3 decoding for edge), the Ray stream to the session actor, resampling,
visemes, the lip-sync call and the first frame's queueing. Piper is the in-process baseline
(its "first audio" is the TTS stage's own `tts_first_audio` mark).
Writes bench/results/tts-backends-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sessions import ROOT, med, pct, r, run_against_server  # noqa: E402

from serve_app.client import AvatarSession  # noqa: E402
from tests.fakes.tts_servers import FakeCosyVoice, FakeEdge, FakeOpenAISpeech, FakeSovits  # noqa: E402

SENTENCE = "One two three four five six seven."
VOICES = {"en-US-AriaNeural": "edge", "jingyuan": "gpt_sovits", "nova": "openai", "sft_woman": "cosyvoice"}


def overrides_for(fakes: dict) -> dict:
    return {"tts": {
        "backend": "edge",
        "options": {"voices": ["en-US-AriaNeural"], "endpoint": fakes["edge"].endpoint},
        "engines": {
            "sovits": {"backend": "gpt_sovits", "options": {"base_url": fakes["gpt_sovits"].url, "voices": {
                "jingyuan": {"ref_audio_path": "/refs/a.wav", "prompt_lang": "en", "text_lang": "en"}}}},
            "openai": {"backend": "openai", "options": {
                "base_url": fakes["openai"].url + "/v1", "voices": ["nova"], "api_key_env": None}},
            "cosy": {"backend": "cosyvoice", "options": {
                "base_url": fakes["cosyvoice"].url, "voices": {"sft_woman": {"spk_id": "x"}}}},
        },
    }, "sessions": {"admission": {"enabled": False}}}


async def one_turn(session: AvatarSession, fake) -> dict:
    sent_before = len(fake.first_audio_sent) if fake else 0
    asked = time.monotonic()
    turn_id = await session.say(SENTENCE)
    latency = await session.wait_event(lambda e: e["type"] == "latency" and e["turn_id"] == turn_id, 60)
    await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, 60)
    marks = latency["marks"]
    out = {"tts_first_audio_ms": marks.get("tts_first_audio"), "first_frame_ms": marks["first_frame_sent"]}
    if fake is not None and len(fake.first_audio_sent) > sent_before:
        backend_ms = (fake.first_audio_sent[sent_before] - asked) * 1000
        out["backend_first_audio_ms"] = backend_ms
        out["overhead_ms"] = marks["first_frame_sent"] - backend_ms
        out["to_session_ms"] = marks["tts_first_audio"] - backend_ms
    else:  # Piper: from the stage's own first audio
        out["overhead_ms"] = marks["first_frame_sent"] - marks["tts_first_audio"]
    return out


async def run(url: str, args, meter) -> dict:
    fakes = args.fakes
    session = await AvatarSession(url).start()
    results: dict[str, list[dict]] = {}
    try:
        await session.interrupt()
        for voice in [*VOICES, "joe"]:
            backend = VOICES.get(voice, "piper")
            await session.update(voice=voice)
            await one_turn(session, fakes.get(backend))  # warm: connections, first decode
            turns = [await one_turn(session, fakes.get(backend)) for _ in range(args.repeats)]
            results[backend] = turns
            o = [t["overhead_ms"] for t in turns]
            print(f"{backend:11s} overhead (first backend audio -> first frame sent): median {med(o):.1f} ms, "
                  f"p90 {pct(o, 0.9):.1f} ms; to the session: "
                  f"{r(med([t.get('to_session_ms') for t in turns if t.get('to_session_ms') is not None]))} ms",
                  flush=True)
    finally:
        await session.close()
    summary = {b: {"overhead_ms_median": r(med([t["overhead_ms"] for t in ts])),
                   "overhead_ms_p90": r(pct([t["overhead_ms"] for t in ts], 0.9))} for b, ts in results.items()}
    return {"sentence": SENTENCE, "repeats": args.repeats, "summary": summary, "turns": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    args = parser.parse_args()
    args.url = None  # the fakes' addresses go into the app's config: always a fresh local cluster
    args.fakes = {"edge": FakeEdge(), "gpt_sovits": FakeSovits(), "openai": FakeOpenAISpeech(),
                  "cosyvoice": FakeCosyVoice()}
    for fake in args.fakes.values():
        fake.start()
    try:
        run_against_server("tts-backends", args, run, overrides_for(args.fakes))
    finally:
        for fake in args.fakes.values():
            fake.stop()


if __name__ == "__main__":
    main()
