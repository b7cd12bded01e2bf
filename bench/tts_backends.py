"""Our own overhead per TTS backend, and the realtime mode's: the backend's first audio ->
the session's first frame sent.

    python bench/tts_backends.py --repeats 10

Every backend runs against its fake server (tests/fakes/tts_servers.py, realtime_server.py)
in this process, so the servers' own synthesis time is out of the figure: the clock starts
when the fake has written a reply's first audio (a TTS chunk, or a Realtime
`response.output_audio.delta`) to its socket, and stops when the session made the reply's
`latency` event, at its first frame sent. Both are wall-clock ms (the event's `t`), one clock
for every process on the machine. Between the two: the backend client (websocket / HTTP,
MP3 decoding for edge, base64 for realtime), the Ray stream to the session actor (TTS only:
the realtime socket ends in the session itself), resampling, visemes, the lip-sync call and
the first frame's queueing. Piper is the in-process baseline (its "first audio" is the TTS
stage's own `tts_first_audio` mark). Writes bench/results/tts-backends-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sessions import ROOT, med, pct, r, run_against_server  # noqa: E402

from serve_app.client import AvatarSession  # noqa: E402
from tests.fakes.realtime_server import FakeRealtime  # noqa: E402
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


async def one_turn(session: AvatarSession, fake, sent: list[float] | None) -> dict:
    """One `say`; `sent`: the fake's list of first-audio times (None: Piper, in process)."""
    before = len(sent) if sent is not None else 0
    turn_id = await session.say(SENTENCE)
    latency = await session.wait_event(lambda e: e["type"] == "latency" and e["turn_id"] == turn_id, 60)
    await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, 60)
    marks = latency["marks"]
    if sent is None:
        return {"overhead_ms": marks["first_frame_sent"] - marks["tts_first_audio"]}
    if len(sent) <= before:
        raise RuntimeError(f"the fake {type(fake).__name__} sent no audio for the turn")
    return {"overhead_ms": latency["t"] - sent[before]}


def stats(turns: list[dict]) -> dict:
    o = [t["overhead_ms"] for t in turns]
    return {"overhead_ms_median": r(med(o)), "overhead_ms_p90": r(pct(o, 0.9))}


def show(name: str, turns: list[dict]) -> None:
    figures = stats(turns)
    print(f"{name:11s} overhead (first backend audio -> first frame sent): median {figures['overhead_ms_median']} ms, "
          f"p90 {figures['overhead_ms_p90']} ms", flush=True)


async def timed_turns(session: AvatarSession, fake, sent, repeats: int) -> list[dict]:
    await one_turn(session, fake, sent)  # warm: connections, first decode
    return [await one_turn(session, fake, sent) for _ in range(repeats)]


async def run(url: str, args, meter) -> dict:
    fakes = args.fakes
    results: dict[str, list[dict]] = {}
    session = await AvatarSession(url).start()
    try:
        await session.interrupt()
        for voice in [*VOICES, "joe"]:
            backend = VOICES.get(voice, "piper")
            await session.update(voice=voice)
            fake = fakes.get(backend)
            results[backend] = await timed_turns(session, fake, fake.first_audio_at_ms if fake else None,
                                                 args.repeats)
            show(backend, results[backend])
    finally:
        await session.close()
    results["realtime"] = await realtime_turns(url, args)
    show("realtime", results["realtime"])
    summary = {name: stats(turns) for name, turns in results.items()}
    return {"sentence": SENTENCE, "repeats": args.repeats, "summary": summary, "turns": results}


async def realtime_turns(url: str, args) -> list[dict]:
    """The realtime profile as a second app on the same cluster, against the fake server."""
    import asyncio

    from ray import serve

    from serve_app.app import build_app
    from serve_app.local_cluster import run_app

    fake = FakeRealtime().start()
    free = {"ray_actor_options": {"num_cpus": 0}}  # beside the first app, on the same 2 cores
    overrides = {"conversation": {"realtime": {"url": fake.ws_url, "api_key_env": None}},
                 "sessions": {"warm_pool": 0, "actor_num_cpus": 0, "admission": {"enabled": False}},
                 "tts": {"deployment": free}, "lipsync": {"deployment": free}, "ingress": free}
    app = build_app({"profile": "configs/realtime.yaml", "overrides": overrides})
    await asyncio.to_thread(run_app, app, "realtime", "/realtime", timeout_s=120)
    session = await AvatarSession(f"{url}/realtime").start()
    try:
        await session.interrupt()
        return await timed_turns(session, fake, fake.first_delta_at_ms, args.repeats)
    finally:
        await session.close()
        await asyncio.to_thread(serve.delete, "realtime")
        fake.stop()


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
