"""Concurrent-session benchmark: delivered fps, say-to-speech latency and CPU per session.

    python bench/sessions.py --sessions 1 2 4 --seconds 20 --turns 5
    python bench/sessions.py --url http://127.0.0.1:8000 ...   # against a running `serve run`

Without --url it starts its own local Ray cluster (2 CPUs) and deploys serve_config.yaml on a
free port. For each N it opens N sessions at once with real aiortc peers (bench/README.md
explains every number), then each session says sentences back to back while the benchmark
measures. Prints a table per N and writes bench/results/sessions-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from actors.capacity import cpu_ticks
from serve_app.client import AvatarSession
from serve_app.config import PROJECT_ROOT as ROOT

SESSION_NAMESPACE = "digital_human"
SPEECH_RMS = 300.0  # int16 scale: Opus-decoded silence is ~0, Piper speech is in the thousands
SILENCE_RMS = 30.0
SENTENCES = [
    "Hello there, it is a lovely day to talk about the weather.",
    "I can tell you a little about the city and its history.",
    "Please let me know if there is anything else you need.",
    "That is a very good question, let me think about it for a moment.",
    "Our opening hours are nine to five, from Monday to Friday.",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- CPU accounting from /proc (psutil is not a dependency) ---------------------------------
def machine_info() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 2**20
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def print_machine() -> tuple[dict, list[float]]:
    """Print and return the machine description and the load average now."""
    machine, load = machine_info(), loadavg()
    print(f"machine: {machine['cores']} cores, {machine['cpu_model']}, {machine['ram_gib']} GiB RAM; "
          f"load {load}", flush=True)
    return machine, load


def write_results(name: str, report: dict) -> Path:
    """bench/results/<name>-<timestamp>.json (git-ignored); returns the path."""
    out = ROOT / "bench" / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    return out


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


@dataclass
class Proc:
    pid: int
    ppid: int
    start: int  # start time in jiffies since boot: tells a reused pid apart
    ticks: int  # utime + stime of all the process's threads
    title: str


def read_procs() -> dict[int, Proc]:
    procs = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        pid = int(entry.name)
        procs[pid] = Proc(pid, int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]), cmdline.strip())
    return procs


def descendants(procs: dict[int, Proc], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found, stack = set(), [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def looks_like_ray(title: str) -> bool:
    return title.startswith("ray::") or any(
        k in title for k in ("/ray/core/src/ray/", "ray/_private/", "ray/dashboard/", "ray/autoscaler/")
    )


def group_of(title: str) -> str:
    if "SessionActor" in title:
        return "session_actors"
    if title.startswith("ray::ServeReplica:"):
        return title.split(":")[4].split(".")[0].split()[0]  # ray::ServeReplica:<app>:<Deployment>
    if title.startswith("ray::ServeController") or title.startswith("ray::ProxyActor"):
        return "serve_system"
    return "ray_core"  # gcs, raylet, agents, monitors, idle workers


class CpuMeter:
    """CPU seconds over a window: the whole machine, the benchmark process (the client peers
    run here), and the server's processes grouped by role. With a local cluster the server is
    exactly this process's descendants, so other Ray clusters on the machine are not counted;
    with --url it is every Ray-looking process on the machine."""

    def __init__(self, local_cluster: bool) -> None:
        self.local_cluster = local_cluster
        self.me = os.getpid()

    def snapshot(self) -> dict:
        procs = read_procs()
        if self.local_cluster:
            server = descendants(procs, self.me)
        else:
            server = {p.pid for p in procs.values() if looks_like_ray(p.title) and p.pid != self.me}
        return {"t": time.monotonic(), "machine": cpu_ticks(), "procs": procs, "server": server}

    def window(self, a: dict, b: dict) -> dict:
        wall = b["t"] - a["t"]
        busy = (b["machine"][0] - a["machine"][0]) / CLK_TCK
        steal = (b["machine"][1] - a["machine"][1]) / CLK_TCK
        groups: dict[str, float] = {}
        sessions: list[float] = []
        for pid in b["server"]:
            now = b["procs"][pid]
            before = a["procs"].get(pid)
            same = before is not None and before.start == now.start
            ticks = now.ticks - (before.ticks if same else 0)
            cores = ticks / CLK_TCK / wall
            group = group_of(now.title)
            groups[group] = groups.get(group, 0.0) + cores
            if group == "session_actors":
                sessions.append(cores)
        me_a, me_b = a["procs"].get(self.me), b["procs"].get(self.me)
        bench = (me_b.ticks - me_a.ticks) / CLK_TCK / wall if me_a and me_b else float("nan")
        return {
            "wall_s": round(wall, 2),
            "machine_cores": round(busy / wall, 3),  # steal included: time we could not use
            "steal_cores": round(steal / wall, 3),
            "bench_process_cores": round(bench, 3),
            "server_cores": round(sum(groups.values()), 3),
            "server_groups": {k: round(v, 3) for k, v in sorted(groups.items())},
            # one entry per SessionActor process (warm, not yet handed out, ones included)
            "session_actor_cores": sorted((round(c, 3) for c in sessions), reverse=True),
        }


# --- helpers -------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


@contextlib.contextmanager
def server(url: str | None, config: Path, overrides: dict | None = None):
    """Yields (url, local, ray_ok): a fresh local cluster running `config` (its profile with
    `overrides`) when no `url` is given (shut down afterwards), else the running server at
    `url`, with Ray attached if it can be (for the session actors' counters)."""
    if url is None:
        from serve_app.local_cluster import start_local, stop_local

        t = time.monotonic()
        url = start_local(config, overrides=overrides)
        print(f"local cluster deployed in {time.monotonic() - t:.1f} s", flush=True)
        try:
            yield url, True, True
        finally:
            stop_local()
        return
    ray_ok = False
    with contextlib.suppress(Exception):
        import ray

        ray.init(address="auto", namespace="serve", log_to_driver=False)
        ray_ok = True
    yield url.rstrip("/"), False, ray_ok


def run_against_server(name: str, args, main_async, overrides: dict | None = None) -> None:
    """Run `main_async(url, args, meter)` against --url or a fresh local cluster (--config,
    its profile with `overrides`), then write its report, with the machine and the load
    around it, as <name>-<time>.json."""
    machine, load = print_machine()
    with server(args.url, args.config, overrides) as (url, local, _):
        report = asyncio.run(main_async(url, args, CpuMeter(local_cluster=local)))
    report.update({"machine": machine, "load_start": load, "load_end": loadavg(),
                   "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    out = write_results(name, report)
    print(f"load average at end: {loadavg()}\nwrote {out.relative_to(ROOT)}")


async def health(url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return (await http.get("/api/health")).json()


async def wait_health(url: str, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = await health(url)
        if predicate(h) or time.monotonic() > deadline:
            return h
        await asyncio.sleep(0.5)


class ActorStats:
    """The session actors' own counters (video_frames, speech_frames, late_frames), when this
    process is connected to the cluster."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    async def get(self, session_id: str) -> dict | None:
        if not self.enabled:
            return None
        import ray

        try:
            handle = ray.get_actor(f"session:{session_id}", namespace=SESSION_NAMESPACE)
            return await asyncio.wait_for(handle.stats.remote(), 5)
        except Exception:  # noqa: BLE001 - a benchmark reports what it can
            return None


# --- one session's part ---------------------------------------------------------------------
@dataclass
class Runner:
    index: int
    client: AvatarSession
    ready_s: float = 0.0
    turns: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def open(self) -> None:
        t0 = time.monotonic()
        await self.client.start(timeout=90)
        self.ready_s = time.monotonic() - t0
        await self.client.interrupt()  # skip the greeting

    async def wait_silence(self, packets: int = 10, timeout: float = 5) -> None:
        """Until the last `packets` audio packets (20 ms each) are silent: the previous turn's
        tail must not be mistaken for the next turn's first speech."""
        n = len(self.client.received.audio)
        with contextlib.suppress(asyncio.TimeoutError):
            await self.client.wait_until(
                lambda r: len(r.audio) >= n + packets and all(a.rms < SILENCE_RMS for a in r.audio[-packets:]),
                timeout=timeout,
            )

    async def turn(self, k: int, t0: float) -> None:
        s = self.client
        text = SENTENCES[(self.index + k) % len(SENTENCES)]
        audio_from = len(s.received.audio)
        sent = time.monotonic()
        record: dict = {"session": self.index, "k": k, "sent_s": round(sent - t0, 3)}
        try:
            turn_id = await s.say(text)
            record["say_http_ms"] = round((time.monotonic() - sent) * 1000, 1)
            end = await s.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=90)
            record["interrupted"] = end["interrupted"]
            record["turn_s"] = round(end["received_at"] - sent, 3)
            with contextlib.suppress(asyncio.TimeoutError):
                lat = await s.wait_event(lambda e: e["type"] == "latency" and e["turn_id"] == turn_id, timeout=2)
                record["marks"] = lat["marks"]
            first = next(
                (a.t for a in s.received.audio[audio_from:] if a.t >= sent and a.rms > SPEECH_RMS), None
            )
            record["first_speech_ms"] = None if first is None else round((first - sent) * 1000, 1)
        except Exception as exc:  # noqa: BLE001
            record["error"] = f"{type(exc).__name__}: {exc}"
            self.errors.append(record["error"])
        self.turns.append(record)

    async def talk(self, stop: asyncio.Event, t0: float) -> None:
        k = 0
        while not stop.is_set():
            await self.turn(k, t0)
            k += 1
            await self.wait_silence()


# --- one N ----------------------------------------------------------------------------------
async def run_n(url: str, n: int, args, meter: CpuMeter, actors: ActorStats) -> dict:
    result: dict = {"sessions": n, "load_before": loadavg()}
    runners = [Runner(i, AvatarSession(url, keep_frames=False)) for i in range(n)]
    try:
        opened = await asyncio.gather(*(r_.open() for r_ in runners), return_exceptions=True)
        failures = [f"{type(e).__name__}: {e}" for e in opened if isinstance(e, BaseException)]
        if failures:
            result["open_errors"] = failures
            print(f"  could not open all sessions: {failures}")
            return result
        result["ready_s"] = [round(r_.ready_s, 2) for r_ in runners]
        await asyncio.sleep(2)  # let the greeting's flush settle

        # Idle: connected, sending idle video, nobody speaking.
        if args.idle_seconds > 0:
            a = meter.snapshot()
            counts = [len(r_.client.received.video) for r_ in runners]
            await asyncio.sleep(args.idle_seconds)
            b = meter.snapshot()
            result["idle"] = meter.window(a, b)
            result["idle"]["fps"] = [
                round((len(r_.client.received.video) - c) / (b["t"] - a["t"]), 2) for r_, c in zip(runners, counts)
            ]

        # Talking: every session says sentences back to back until --seconds have passed and
        # every session has finished at least --turns turns.
        stats_a = await asyncio.gather(*(actors.get(r_.client.session_id) for r_ in runners))
        a = meter.snapshot()
        t0 = a["t"]
        stop = asyncio.Event()
        talkers = [asyncio.ensure_future(r_.talk(stop, t0)) for r_ in runners]

        async def done() -> bool:
            return time.monotonic() - t0 >= args.seconds and all(
                sum("error" not in t for t in r_.turns) >= args.turns for r_ in runners
            )

        deadline = t0 + max(args.seconds * 4, args.seconds + 120)
        while not await done() and time.monotonic() < deadline and not all(t.done() for t in talkers):
            await asyncio.sleep(0.1)
        b = meter.snapshot()
        t1 = b["t"]
        stats_b = await asyncio.gather(*(actors.get(r_.client.session_id) for r_ in runners))
        stop.set()  # turns in flight finish (their latency counts), no new ones start
        await asyncio.wait_for(asyncio.gather(*talkers, return_exceptions=True), 120)
        result["load_after"] = loadavg()

        window = t1 - t0
        fps, gaps = [], []
        for r_ in runners:
            video = [v.t for v in r_.client.received.video if t0 <= v.t <= t1]
            fps.append(len(video) / window)
            gaps.extend((y - x) * 1000 for x, y in zip(video, video[1:]))
        turns = [t for r_ in runners for t in r_.turns if t["sent_s"] <= window]
        ok = [t for t in turns if "error" not in t]
        speech = [t["first_speech_ms"] for t in ok if t.get("first_speech_ms") is not None]
        marks: dict[str, list[float]] = {}
        for t in ok:
            for name, value in t.get("marks", {}).items():
                marks.setdefault(name, []).append(value)
        server = []
        for sa, sb in zip(stats_a, stats_b):
            if sa and sb:
                server.append(
                    {
                        k: sb[k] - sa[k]
                        for k in ("video_frames", "speech_frames", "late_frames")
                    }
                )
        result.update(
            {
                "window_s": round(window, 2),
                "fps": [round(f, 2) for f in fps],
                "fps_median": r(med(fps), 2),
                "fps_min": r(min(fps), 2),
                "frame_gap_ms_p50": r(pct(gaps, 0.5)),
                "frame_gap_ms_p99": r(pct(gaps, 0.99)),
                "frame_gap_ms_max": r(max(gaps) if gaps else None),
                "turns": len(turns),
                "turn_errors": [t["error"] for t in turns if "error" in t],
                "turns_interrupted": sum(bool(t.get("interrupted")) for t in ok),
                "turns_without_speech": sum(t.get("first_speech_ms") is None for t in ok),
                "say_to_speech_ms_p50": r(pct(speech, 0.5)),
                "say_to_speech_ms_p95": r(pct(speech, 0.95)),
                "say_to_speech_ms_max": r(max(speech) if speech else None),
                "say_http_ms_p50": r(pct([t["say_http_ms"] for t in ok if "say_http_ms" in t], 0.5)),
                "server_marks_ms_median": {k: r(med(v)) for k, v in marks.items()},
                "actor_stats": server,
                "server_fps": [round(s["video_frames"] / window, 2) for s in server],
                "late_frames": sum(s["late_frames"] for s in server) if server else None,
                "speech_frames": sum(s["speech_frames"] for s in server) if server else None,
                "cpu": meter.window(a, b),
                "turn_log": turns,
            }
        )
        return result
    finally:
        await asyncio.gather(*(r_.client.close() for r_ in runners), return_exceptions=True)
        h = await wait_health(url, lambda h: h["sessions"] == 0, 30)
        result["sessions_after_close"] = h["sessions"]
        if h["sessions"] != 0:
            print(f"  WARNING: {h['sessions']} sessions still open after closing")


async def idle_baseline(url: str, seconds: float, meter: CpuMeter) -> dict:
    a = meter.snapshot()
    await asyncio.sleep(seconds)
    b = meter.snapshot()
    return {"sessions": 0, "load": loadavg(), "cpu": meter.window(a, b)}


# --- output ---------------------------------------------------------------------------------
def fmt(x, nd=1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def print_n(res: dict, base: dict) -> None:
    n = res["sessions"]
    if "fps" not in res:
        print(f"N={n}: no measurement ({res.get('open_errors')})")
        return
    cpu, cpu0 = res["cpu"], base["cpu"]
    marks = res["server_marks_ms_median"]
    print(f"\n=== N={n} sessions   window {res['window_s']} s   turns {res['turns']}"
          f"   load {res['load_before'][0]:.2f} -> {res['load_after'][0]:.2f}")
    print(f"  ready after connect (s)      : {', '.join(fmt(x, 2) for x in res['ready_s'])}")
    print(f"  delivered fps  median / min  : {fmt(res['fps_median'], 2)} / {fmt(res['fps_min'], 2)}"
          f"   (server sent: {', '.join(fmt(x, 2) for x in res['server_fps']) or '-'})")
    print(f"  frame gap ms p50 / p99 / max : {fmt(res['frame_gap_ms_p50'])} / {fmt(res['frame_gap_ms_p99'])}"
          f" / {fmt(res['frame_gap_ms_max'])}")
    print(f"  late frames (server)         : {fmt(res['late_frames'])} of {sum(s['video_frames'] for s in res['actor_stats']) if res['actor_stats'] else '-'}")
    print(f"  say -> speech ms p50 / p95   : {fmt(res['say_to_speech_ms_p50'])} / {fmt(res['say_to_speech_ms_p95'])}"
          f"   (max {fmt(res['say_to_speech_ms_max'])}, say HTTP p50 {fmt(res['say_http_ms_p50'])})")
    print(f"  server marks ms (median)     : tts_first_audio {fmt(marks.get('tts_first_audio'))}"
          f", first_frame_sent {fmt(marks.get('first_frame_sent'))}")
    if res["turn_errors"] or res["turns_without_speech"] or res["turns_interrupted"]:
        print(f"  problems                     : errors {len(res['turn_errors'])}, no speech "
              f"{res['turns_without_speech']}, interrupted {res['turns_interrupted']}")
    per = (cpu["server_cores"] - cpu0["server_cores"]) / n
    print(f"  cores machine / server / bench: {cpu['machine_cores']:.2f} / {cpu['server_cores']:.2f}"
          f" / {cpu['bench_process_cores']:.2f}   (idle N=0: {cpu0['machine_cores']:.2f} / "
          f"{cpu0['server_cores']:.2f} / {cpu0['bench_process_cores']:.2f})")
    print(f"  server cores per session     : {per:.3f}  (= (server(N) - server(0)) / N, talking)")
    print(f"  session actor procs (cores)  : {', '.join(f'{c:.3f}' for c in cpu['session_actor_cores'])}")
    print("  server by role (cores)       : "
          + ", ".join(f"{k} {v:.3f}" for k, v in cpu["server_groups"].items()))
    if "idle" in res:
        idle = res["idle"]
        print(f"  idle-connected (no speech)   : server {idle['server_cores']:.2f} cores, "
              f"{(idle['server_cores'] - cpu0['server_cores']) / n:.3f}/session, bench "
              f"{idle['bench_process_cores']:.2f}, fps {', '.join(fmt(x, 1) for x in idle['fps'])}")


def print_summary(results: list[dict], base: dict) -> None:
    cpu0 = base["cpu"]
    print("\nSummary (talking; cores = CPU seconds per second; server excludes the benchmark's client peers)")
    header = ("N", "fps med", "fps min", "late", "speech p50", "speech p95", "tts_first", "first_frame",
              "srv cores", "srv/sess", "actor/sess", "bench", "machine")
    print("  ".join(f"{h:>10}" for h in header))
    print(("  ".join(f"{x:>10}" for x in ("0", "-", "-", "-", "-", "-", "-", "-",
           f"{cpu0['server_cores']:.2f}", "-", "-", f"{cpu0['bench_process_cores']:.2f}",
           f"{cpu0['machine_cores']:.2f}"))))
    for res in results:
        if "fps" not in res:
            print(f"{res['sessions']:>10}  (failed to open: {res.get('open_errors')})")
            continue
        n, cpu, marks = res["sessions"], res["cpu"], res["server_marks_ms_median"]
        actors = sorted(cpu["session_actor_cores"], reverse=True)[:n]
        row = (
            n, fmt(res["fps_median"]), fmt(res["fps_min"]), fmt(res["late_frames"]),
            fmt(res["say_to_speech_ms_p50"], 0), fmt(res["say_to_speech_ms_p95"], 0),
            fmt(marks.get("tts_first_audio"), 0), fmt(marks.get("first_frame_sent"), 0),
            f"{cpu['server_cores']:.2f}", f"{(cpu['server_cores'] - cpu0['server_cores']) / n:.3f}",
            f"{statistics.mean(actors):.3f}" if actors else "-",
            f"{cpu['bench_process_cores']:.2f}", f"{cpu['machine_cores']:.2f}",
        )
        print("  ".join(f"{x:>10}" for x in row))


# --- main -----------------------------------------------------------------------------------
async def main_async(url: str, args, meter: CpuMeter, actors: ActorStats) -> dict:
    h = await wait_health(url, lambda h: h.get("warm_actors", 0) >= 1, 60)
    print(f"server: {url}  profile {h.get('profile')}  max_sessions {h.get('max_sessions')}")
    await asyncio.sleep(3)
    print(f"idle baseline ({args.seconds} s, 0 sessions) ...", flush=True)
    base = await idle_baseline(url, args.seconds, meter)
    c = base["cpu"]
    print(f"  cores machine {c['machine_cores']:.2f}, server {c['server_cores']:.2f}, bench "
          f"{c['bench_process_cores']:.2f}, by role: {c['server_groups']}")
    results = []
    for n in args.sessions:
        if n > h.get("max_sessions", n):
            print(f"\nN={n}: over max_sessions={h['max_sessions']}, skipped")
            continue
        print(f"\nN={n}: opening ...", flush=True)
        res = await run_n(url, n, args, meter, actors)
        results.append(res)
        print_n(res, base)
        # Let the warm pool refill (a new actor process starting costs CPU) before the next N.
        await wait_health(url, lambda h: h.get("warm_actors", 0) >= 1, 30)
        await asyncio.sleep(3)
    print_summary(results, base)
    return {"baseline": base, "results": results, "url": url}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=20, help="talking window per N (and the idle baseline)")
    parser.add_argument("--turns", type=int, default=5, help="minimum finished turns per session per N")
    parser.add_argument("--idle-seconds", type=float, default=5, help="idle-connected window per N (0: skip)")
    parser.add_argument("--url", help="a running server; default: start a local cluster")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    args = parser.parse_args()

    machine, _ = print_machine()
    with server(args.url, args.config) as (url, local, ray_ok):
        meter = CpuMeter(local_cluster=local)
        report = asyncio.run(main_async(url, args, meter, ActorStats(ray_ok)))
    report.update({"machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
                   "load_end": loadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    out = write_results("sessions", report)
    print(f"\nload average at end: {loadavg()}\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
