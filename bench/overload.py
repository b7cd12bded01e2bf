"""Overload and soak benchmark: admission by measured capacity, and what admitted sessions keep.

    python bench/overload.py --max 6 --step-seconds 20                 # ramp N = 1..6, admission on
    python bench/overload.py --max 6 --step-seconds 20 --no-admission  # the same ramp, fixed cap only
    python bench/overload.py --soak 600 --sessions 2                   # 2 sessions talking for 10 min

Ramp: one new session is asked for per step while the sessions already admitted keep talking
(sentence after sentence); a refused one (503) is counted with its reason, and the step then
measures every admitted session: delivered fps, frame gaps at the client, the server's late,
skipped and repeated frames, skipped audio packets and mid-reply underruns, say -> first
speech audio, and the machine's CPU with its steal time. The cap (`sessions.max_sessions`)
is raised to --max, so admission alone decides.

Soak: --sessions talking for --soak seconds, measured per minute, with each session actor's
memory at the start and the end; then half the clients DELETE their session and half just
hang up, and the benchmark counts the session actors left alive.
Writes bench/results/overload-<timestamp>.json (or soak-...).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sessions import (  # noqa: E402
    ROOT, ActorStats, CpuMeter, Runner, loadavg, med, pct, r, run_against_server, wait_health,
)

from serve_app.client import ApiError, AvatarSession  # noqa: E402

COUNTERS = ("video_frames", "late_frames", "skipped_frames", "repeated_frames", "audio_skipped", "underrun_frames")
SESSION_NAMESPACE = "digital_human"


async def actor_call(session_id: str, method: str):
    import ray

    with contextlib.suppress(Exception):
        handle = ray.get_actor(f"session:{session_id}", namespace=SESSION_NAMESPACE)
        return await asyncio.wait_for(getattr(handle, method).remote(), 5)
    return None


async def measure(runners: list[Runner], seconds: float, meter: CpuMeter, actors: ActorStats, origin: float) -> dict:
    """One window over every admitted session (all talking)."""
    stats_a = await asyncio.gather(*(actors.get(x.client.session_id) for x in runners))
    a = meter.snapshot()
    await asyncio.sleep(seconds)
    b = meter.snapshot()
    stats_b = await asyncio.gather(*(actors.get(x.client.session_id) for x in runners))
    ta, tb = a["t"], b["t"]
    window = tb - ta
    sessions = []
    speech: list[float] = []
    for runner, sa, sb in zip(runners, stats_a, stats_b):
        video = [v.t for v in runner.client.received.video if ta <= v.t <= tb]
        audio = [x.t for x in runner.client.received.audio if ta <= x.t <= tb]
        gaps = [(y - x) * 1000 for x, y in zip(video, video[1:])]
        audio_gaps = [(y - x) * 1000 for x, y in zip(audio, audio[1:])]
        turns = [t for t in runner.turns if ta <= origin + t["sent_s"] <= tb and "error" not in t]
        said = [t["first_speech_ms"] for t in turns if t.get("first_speech_ms") is not None]
        speech.extend(said)
        server = {k: sb[k] - sa[k] for k in COUNTERS} if sa and sb else {}
        sessions.append({
            "session": runner.index,
            "fps": round(len(video) / window, 2),
            "frame_gap_ms_max": r(max(gaps) if gaps else None),
            "audio_gap_ms_max": r(max(audio_gaps) if audio_gaps else None),
            "turns": len(turns),
            "say_to_speech_ms_p50": r(pct(said, 0.5)),
            "server": server,
        })
    totals = {k: sum(s["server"].get(k, 0) for s in sessions) for k in COUNTERS}
    return {
        "window_s": round(window, 1),
        "sessions": sessions,
        "fps_min": min((s["fps"] for s in sessions), default=None),
        "fps_median": r(med([s["fps"] for s in sessions]), 2),
        "say_to_speech_ms_p50": r(pct(speech, 0.5)),
        "turns": sum(s["turns"] for s in sessions),
        "server_totals": totals,
        "cpu": meter.window(a, b),
        "load": loadavg(),
    }


def print_step(step: dict) -> None:
    m, cpu, t = step["measure"], step["measure"]["cpu"], step["measure"]["server_totals"]
    refused = f"refused ({step['refused']})" if step.get("refused") else "admitted"
    print(f"N asked {step['asked']}: {refused}; {step['admitted']} talking | fps med/min "
          f"{m['fps_median']}/{m['fps_min']} | late {t['late_frames']} skipped {t['skipped_frames']} "
          f"repeated {t['repeated_frames']} | audio skipped {t['audio_skipped']} underrun {t['underrun_frames']} | "
          f"say->speech p50 {m['say_to_speech_ms_p50']} ms ({m['turns']} turns) | machine "
          f"{cpu['machine_cores']:.2f} cores, steal {cpu['steal_cores']:.2f} | load {m['load'][0]:.2f}", flush=True)


async def ramp(url: str, args, meter: CpuMeter) -> dict:
    actors = ActorStats(meter.local_cluster)
    await wait_health(url, lambda h: h.get("warm_actors", 0) >= 1, 60)
    origin = time.monotonic()
    stop = asyncio.Event()
    runners: list[Runner] = []
    talkers: list[asyncio.Task] = []
    steps = []
    try:
        for asked in range(1, args.max + 1):
            step: dict = {"asked": asked}
            runner = Runner(asked - 1, AvatarSession(url, keep_frames=False))
            try:
                await runner.open()
                runners.append(runner)
                talkers.append(asyncio.ensure_future(runner.talk(stop, origin)))
            except ApiError as error:
                step["refused"] = f"{error.status}: {error.detail}"
                step["retry_after"] = error.headers.get("Retry-After")
                await runner.client.close()
            step["admitted"] = len(runners)
            await asyncio.sleep(2)  # its greeting cut, its first turn under way
            step["measure"] = await measure(runners, args.step_seconds, meter, actors, origin)
            step["health"] = (await wait_health(url, lambda h: True, 5)).get("admission")
            steps.append(step)
            print_step(step)
    finally:
        stop.set()
        await asyncio.gather(*talkers, return_exceptions=True)
        await asyncio.gather(*(x.client.close() for x in runners), return_exceptions=True)
    baseline = next((s["measure"]["say_to_speech_ms_p50"] for s in steps if s["admitted"] == 1), None)
    admitted = [s for s in steps if not s.get("refused")]
    print(f"\nadmitted at most {max(s['admitted'] for s in steps)}; refused asks: "
          f"{sum(bool(s.get('refused')) for s in steps)}; say->speech p50 at N=1: {baseline} ms")
    return {"mode": "ramp", "admission": not args.no_admission, "steps": steps, "admitted_steps": len(admitted),
            "say_to_speech_ms_p50_n1": baseline}


async def admitted(url: str, index: int, patience_s: float = 120) -> Runner:
    """A session opened as soon as admission lets it in (honouring Retry-After)."""
    give_up = time.monotonic() + patience_s
    while True:
        runner = Runner(index, AvatarSession(url, keep_frames=False))
        try:
            await runner.open()
            return runner
        except ApiError as error:
            await runner.client.close()
            if error.status != 503 or time.monotonic() > give_up:
                raise
            print(f"session {index}: {error.detail}; retrying", flush=True)
            await asyncio.sleep(int(error.headers.get("Retry-After", "5")))


async def soak(url: str, args, meter: CpuMeter) -> dict:
    actors = ActorStats(meter.local_cluster)
    await wait_health(url, lambda h: h.get("warm_actors", 0) >= 1, 60)
    origin = time.monotonic()
    stop = asyncio.Event()
    runners = [await admitted(url, i) for i in range(args.sessions)]
    talkers = [asyncio.ensure_future(x.talk(stop, origin)) for x in runners]
    await asyncio.sleep(5)
    ids = [x.client.session_id for x in runners]
    memory_start = [getattr(await actor_call(i, "load"), "rss_mb", None) for i in ids]
    minutes = []
    for minute in range(int(args.soak // 60)):
        m = await measure(runners, 60, meter, actors, origin)
        m["memory_mb"] = [getattr(await actor_call(i, "load"), "rss_mb", None) for i in ids]
        minutes.append(m)
        t = m["server_totals"]
        print(f"minute {minute + 1}: fps min {m['fps_min']} | max frame gap "
              f"{max(s['frame_gap_ms_max'] or 0 for s in m['sessions'])} ms | max audio gap "
              f"{max(s['audio_gap_ms_max'] or 0 for s in m['sessions'])} ms | late {t['late_frames']} skipped "
              f"{t['skipped_frames']} repeated {t['repeated_frames']} audio skipped {t['audio_skipped']} underrun "
              f"{t['underrun_frames']} | say->speech p50 {m['say_to_speech_ms_p50']} | machine "
              f"{m['cpu']['machine_cores']:.2f} steal {m['cpu']['steal_cores']:.2f} | load {m['load'][0]:.2f} | "
              f"actors MiB {m['memory_mb']}", flush=True)
    memory_end = minutes[-1]["memory_mb"] if minutes else memory_start
    stop.set()
    await asyncio.gather(*talkers, return_exceptions=True)
    # Teardown: half DELETE, half just hang up (the server must notice the peer is gone).
    hang_up = runners[len(runners) // 2:]
    await asyncio.gather(*(x.client.close() for x in runners[: len(runners) // 2]))
    await asyncio.gather(*(x.client.close(delete=False) for x in hang_up))
    t = time.monotonic()
    health = await wait_health(url, lambda h: h["sessions"] == 0, 120)
    gone_s = round(time.monotonic() - t, 1)
    alive = None
    if meter.local_cluster:
        import ray

        alive_ids = {n["name"].split(":", 1)[1] for n in ray.util.list_named_actors(all_namespaces=True)
                     if n["namespace"] == SESSION_NAMESPACE and n["name"].startswith("session:")}
        alive = len(alive_ids & set(ids))
    print(f"memory (MiB) start {memory_start} end {memory_end}; after teardown: {health['sessions']} sessions, "
          f"{alive} of the soak's session actors alive, {health['warm_actors']} warm; gone in {gone_s} s")
    return {"mode": "soak", "sessions": args.sessions, "seconds": args.soak, "minutes": minutes,
            "memory_mb_start": memory_start, "memory_mb_end": memory_end,
            "sessions_after_teardown": health["sessions"], "soak_actors_alive_after": alive,
            "warm_actors_after": health["warm_actors"], "teardown_s": gone_s,
            "turn_errors": [e for x in runners for e in x.errors]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max", type=int, default=6, help="ramp: sessions asked for, one per step")
    parser.add_argument("--step-seconds", type=float, default=20, help="ramp: measuring window per step")
    parser.add_argument("--no-admission", action="store_true", help="fixed cap only (admission off)")
    parser.add_argument("--soak", type=float, default=0, help="soak for this many seconds instead of the ramp")
    parser.add_argument("--sessions", type=int, default=2, help="soak: sessions talking")
    parser.add_argument("--url", help="a running server; default: start a local cluster")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    args = parser.parse_args()
    overrides = {"sessions": {"max_sessions": max(args.max, args.sessions),
                              "admission": {"enabled": not args.no_admission}}}
    if args.soak:
        run_against_server("soak", args, soak, overrides)
    else:
        run_against_server("overload", args, ramp, overrides)


if __name__ == "__main__":
    main()
