"""WebSocket and MJPEG outputs: say -> first audio, delivered frame rate, CPU per viewer.

    python bench/streaming.py                                  # own local cluster (~5 min)
    python bench/streaming.py --trials 5 --viewers 1 2 --seconds 8   # quick check
    python bench/streaming.py --url http://127.0.0.1:8000      # a running `serve run`

1. **say -> first audio** (`--trials`): one WebSocket session (JPEG face); the `say` goes on
   the socket; latency is the arrival of the first 40 ms audio message with speech energy,
   minus the moment the say was sent. The same, through REST `say` and a WebRTC peer, in the
   same run, for comparison.
2. **Viewers** (`--viewers`): N WebSocket sessions at once, idle (the avatar's idle frames
   stream at 25 fps), for `--seconds`, once with `face: jpeg` and once with
   `face: visemes`: delivered frames per second per client, and CPU by process role
   (session actors, Ingress, Serve's proxy and controller) minus the N=0 baseline. Each
   frame crosses Ray once (session actor -> ingress) and is copied into the proxy.
3. **MJPEG viewers** (`--mjpeg-viewers`): one seed-API inference session (POST
   /api/inference/start with text) watched by N `GET /api/stream/{id}` clients at once:
   delivered frames per second per viewer, and CPU per viewer over one viewer's.

Prints a table and writes bench/results/streaming-<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sessions import CpuMeter, loadavg, med, pct, r, run_against_server, wait_health  # noqa: E402

import httpx  # noqa: E402

from serve_app.client import AvatarSession, SocketSession  # noqa: E402
from serve_app.config import PROJECT_ROOT as ROOT  # noqa: E402

SPEECH_RMS = 300.0
SENTENCES = ["Hello there.", "The weather is lovely today.", "I can talk over a socket.", "Nice to meet you."]


async def socket_say_latency(url: str, trials: int) -> list[float]:
    out = []
    async with SocketSession(url) as session:
        await session.connect()
        await session.wait_event(lambda e: e["type"] == "ready")
        for i in range(trials):
            await session.interrupt()
            sent = time.monotonic()
            await session.send({"type": "say", "text": SENTENCES[i % len(SENTENCES)]})
            await session.wait_until(lambda s: any(a.t > sent and a.rms > SPEECH_RMS for a in s.audio), 30)
            first = next(a.t for a in session.audio if a.t > sent and a.rms > SPEECH_RMS)
            out.append((first - sent) * 1000)
            await session.wait_event(lambda e: e["type"] == "turn_end" and e["received_at"] > sent, 30)
    return out


async def webrtc_say_latency(url: str, trials: int) -> list[float]:
    out = []
    session = await AvatarSession(url).start()
    try:
        for i in range(trials):
            await session.interrupt()
            sent = time.monotonic()
            turn = await session.say(SENTENCES[i % len(SENTENCES)])
            await session.wait_until(lambda rc: any(a.t > sent and a.rms > SPEECH_RMS for a in rc.audio), 30)
            first = next(a.t for a in session.received.audio if a.t > sent and a.rms > SPEECH_RMS)
            out.append((first - sent) * 1000)
            await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn, 30)
    finally:
        await session.close()
    return out


async def viewers(url: str, n: int, face: str, seconds: float, meter: CpuMeter) -> dict:
    sessions = [SocketSession(url, face=face) for _ in range(n)]
    try:
        for s in sessions:
            await s.create()
            await s.connect()
            await s.wait_event(lambda e: e["type"] == "ready")
            await s.interrupt()
        await asyncio.sleep(2)  # past the greeting's cut and the first frames
        counts = [len(s.jpegs) if face == "jpeg" else len(s.mouths) for s in sessions]
        a = meter.snapshot()
        await asyncio.sleep(seconds)
        b = meter.snapshot()
        fps = [((len(s.jpegs) if face == "jpeg" else len(s.mouths)) - c) / seconds for s, c in zip(sessions, counts)]
        return {"n": n, "face": face, "fps": [round(f, 1) for f in fps], "cpu": meter.window(a, b)}
    finally:
        for s in sessions:
            await s.close()


async def mjpeg_viewers(url: str, n: int, seconds: float, meter: CpuMeter) -> dict:
    """N clients reading one inference session's MJPEG stream; frames counted by boundary."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        started = (await http.post("/api/inference/start", json={"avatar_id": "default", "text": "Hello."})).json()
        counts = [0] * n
        counting = asyncio.Event()

        async def watch(i: int) -> None:
            async with http.stream("GET", started["stream_url"]) as stream:
                async for chunk in stream.aiter_bytes():
                    if counting.is_set():
                        counts[i] += chunk.count(b"--frame\r\n")

        watchers = [asyncio.create_task(watch(i)) for i in range(n)]
        try:
            await asyncio.sleep(3)  # past the greeting-free start and the first frames
            counting.set()
            a = meter.snapshot()
            await asyncio.sleep(seconds)
            b = meter.snapshot()
            fps = [c / seconds for c in counts]
        finally:
            for task in watchers:
                task.cancel()
            with contextlib.suppress(Exception):
                await http.post(f"/api/inference/stop/{started['session_id']}")
    return {"n": n, "face": "mjpeg", "fps": [round(f, 1) for f in fps], "cpu": meter.window(a, b)}


def per_viewer(res: dict, base: dict) -> dict:
    groups = {k: (v - base["cpu"]["server_groups"].get(k, 0.0)) / res["n"] for k, v in res["cpu"]["server_groups"].items()}
    return {k: round(v, 3) for k, v in groups.items() if abs(v) >= 0.002}


async def main_async(url: str, args, meter: CpuMeter) -> dict:
    await wait_health(url, lambda h: h.get("warm_actors", 0) >= 1, 60)
    print(f"load at the start of measuring: {loadavg()}")
    print(f"say -> first audio, {args.trials} trials each ...", flush=True)
    ws = await socket_say_latency(url, args.trials)
    rtc = await webrtc_say_latency(url, args.trials)
    print(f"  WebSocket : p50 {r(med(ws))} ms  p95 {r(pct(ws, 0.95))}  ({[round(x) for x in ws]})")
    print(f"  WebRTC    : p50 {r(med(rtc))} ms  p95 {r(pct(rtc, 0.95))}  ({[round(x) for x in rtc]})")
    await wait_health(url, lambda h: h.get("sessions", 1) == 0 and h.get("warm_actors", 0) >= 1, 60)
    await asyncio.sleep(3)
    a = meter.snapshot()
    await asyncio.sleep(args.seconds)
    base = {"cpu": meter.window(a, meter.snapshot())}
    print(f"idle baseline: server {base['cpu']['server_cores']:.2f} cores {base['cpu']['server_groups']}")
    results = []
    for face in ("jpeg", "visemes"):
        for n in args.viewers:
            res = await viewers(url, n, face, args.seconds, meter)
            res["per_viewer_cores"] = per_viewer(res, base)
            results.append(res)
            print(f"  {face:8s} N={n}: fps per client {res['fps']}  server {res['cpu']['server_cores']:.2f} cores "
                  f"(machine {res['cpu']['machine_cores']:.2f}); per viewer over idle: {res['per_viewer_cores']}", flush=True)
            await wait_health(url, lambda h: h.get("sessions", 1) == 0 and h.get("warm_actors", 0) >= 1, 60)
    mjpeg = []
    for n in args.mjpeg_viewers:
        res = await mjpeg_viewers(url, n, args.seconds, meter)
        res["per_viewer_cores"] = per_viewer(res, base)  # includes the one session's own idle cost
        mjpeg.append(res)
        print(f"  mjpeg    N={n}: fps per viewer {res['fps']}  server {res['cpu']['server_cores']:.2f} cores "
              f"(machine {res['cpu']['machine_cores']:.2f}); per viewer over idle: {res['per_viewer_cores']}", flush=True)
        await wait_health(url, lambda h: h.get("sessions", 1) == 0 and h.get("warm_actors", 0) >= 1, 60)
    return {"say_first_audio_ms": {"websocket": ws, "webrtc": rtc}, "baseline": base, "viewers": results,
            "mjpeg": mjpeg}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--mjpeg-viewers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--url")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    # Every viewer here comes from this machine's one address: lift the per-client stream
    # bounds (limits.streams) that would otherwise refuse the fourth WebSocket or MJPEG viewer.
    one_address = {"limits": {"streams": {"websocket": {"total": 24, "per_client": 24},
                                          "mjpeg": {"total": 12, "per_client": 12}}}}
    run_against_server("streaming", parser.parse_args(), main_async, one_address)

if __name__ == "__main__":
    main()
