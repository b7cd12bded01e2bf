"""MP4 render speed, and what a render costs the live sessions beside it.

    python bench/render.py                       # own local cluster (~3 min)
    python bench/render.py --renders 1           # quick check
    python bench/render.py --url http://127.0.0.1:8000

1. One live WebRTC session idles (idle frames at 25 fps); its delivered fps is measured for
   `--seconds` with nothing else running.
2. `--renders` renders of a ~12 s text (and one of an uploaded audio file) run one after
   another; render speed = the video's duration / (done - submitted), as a multiple of
   real time, and the live session's delivered fps meanwhile.

Prints a table and writes bench/results/render-<time>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sessions import CpuMeter, loadavg, med, r, run_against_server, wait_health  # noqa: E402

from serve_app.client import AvatarSession  # noqa: E402
from serve_app.config import PROJECT_ROOT as ROOT  # noqa: E402

TEXT = ("Welcome to today's lesson. We will look at how a lip-synced video is made from a script: "
        "the voice is synthesised sentence by sentence, each sentence's audio is cut into frames, "
        "and every frame of the face is drawn to match its slice of the sound.")


async def fps_over(session: AvatarSession, seconds: float) -> float:
    before = len(session.received.video)
    await asyncio.sleep(seconds)
    return (len(session.received.video) - before) / seconds


async def one_render(http: httpx.AsyncClient, **request) -> dict:
    submitted = time.monotonic()
    job = (await http.post("/api/renders", **request)).json()
    while job["state"] not in ("done", "failed", "cancelled"):
        await asyncio.sleep(0.2)
        job = (await http.get(job["status_url"])).json()
    wall = time.monotonic() - submitted
    return {"state": job["state"], "duration_s": job["duration_s"], "wall_s": round(wall, 2),
            "x_real_time": round(job["duration_s"] / wall, 2) if job["state"] == "done" else None,
            "bytes": job.get("bytes")}


async def main_async(url: str, args, meter: CpuMeter) -> dict:
    await wait_health(url, lambda h: h.get("warm_actors", 0) >= 1, 60)
    live = await AvatarSession(url).start()
    await live.interrupt()
    try:
        await asyncio.sleep(2)
        quiet = await fps_over(live, args.seconds)
        print(f"load {loadavg()}; live session alone: {quiet:.1f} fps", flush=True)
        results = []
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            audio = (ROOT / "tests" / "fixtures" / "weather_question.wav").read_bytes()
            requests = [{"json": {"avatar": "default", "text": TEXT}}] * args.renders + [
                {"data": {"avatar": "default"}, "files": {"audio": ("q.wav", audio, "audio/wav")}}]
            for request in requests:
                frames_before, t = len(live.received.video), time.monotonic()
                a = meter.snapshot()
                res = await one_render(http, **request)
                res["live_fps_meanwhile"] = round((len(live.received.video) - frames_before) / (time.monotonic() - t), 1)
                res["cpu"] = meter.window(a, meter.snapshot())
                results.append(res)
                print(f"  {'text' if 'json' in request else 'audio'}: {res['duration_s']} s of video in {res['wall_s']} s "
                      f"= {res['x_real_time']}x real time; live session meanwhile {res['live_fps_meanwhile']} fps; "
                      f"Renders replica {res['cpu']['server_groups'].get('Renders', 0):.2f} cores", flush=True)
    finally:
        await live.close()
    speeds = [x["x_real_time"] for x in results if x["x_real_time"]]
    print(f"render speed p50 {r(med(speeds), 2)}x real time; live fps alone {quiet:.1f}, during renders "
          f"{[x['live_fps_meanwhile'] for x in results]}")
    return {"live_fps_alone": round(quiet, 1), "renders": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--renders", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--url")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    run_against_server("render", parser.parse_args(), main_async)

if __name__ == "__main__":
    main()
