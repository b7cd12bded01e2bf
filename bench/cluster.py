"""Scale-out on Ray's fake multi-node autoscaling cluster (serve_app/local_cluster.py).

    python bench/cluster.py --cold 3 --loss 3 --ramp 3 --step-s 25

Deploys tests/fixtures/cluster.yaml (Piper, viseme lip-sync; the head holds 1 session slot, a
worker node 2 and the autoscaler may start one) and measures:

1. Node start to first frame: with the head's slot taken, the time from `POST /api/sessions`
   to the session's first video frame at the client, when its actor needs a worker node the
   autoscaler starts (cold), and when it lands on a live node with a free slot (warm).
2. Node loss to the session back: a session on a worker node whose node is killed (its
   raylet and processes, `FakeAutoscalingCluster.kill_node`); the times from the kill to
   its client noticing (unanswered pings), to the resumed session's `ready` after
   `reconnect()` (a new actor on a node the autoscaler starts), and to its first frame.
3. A load ramp: one more talking session every `--step-s`, up to `--ramp`, then all fall
   silent; every second, the running replicas of LipSync (deadline policy,
   `--target-use`) and TTS (ongoing requests, `--tts-target`) and the nodes alive.

Stops every Ray process of the machine as it starts (`ray stop --force`): run nothing beside
it. Writes bench/results/cluster-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sessions import loadavg, med, print_machine, write_results  # noqa: E402

from actors.capacity import cpu_ticks  # noqa: E402
from serve_app.client import AvatarSession  # noqa: E402
from serve_app.config import PROJECT_ROOT  # noqa: E402
from serve_app.local_cluster import alive_nodes, session_node, until  # noqa: E402

HEAD = {"CPU": 2, "session_slots": 1, "models": 10}
# Two worker nodes at most: a lost one and the one started in its place.
WORKERS = {"sessions": {"resources": {"CPU": 2, "session_slots": 2}, "min_workers": 0, "max_workers": 2}}
IDLE_TIMEOUT_S = 10
LONG = ("This answer goes on for a while, sentence after sentence, so that the lip-sync replicas "
        "have chunks to render. It says a little more. And then a little more again.")


def replicas(deployment: str) -> int:
    from ray import serve

    return serve.status().applications["digital_human"].deployments[deployment].replica_states.get("RUNNING", 0)


async def timed_session(url: str) -> tuple[AvatarSession, dict]:
    """A new session, timed from its creation request to its first video frame."""
    session = AvatarSession(url, request_timeout=240)
    start = time.monotonic()
    await session.create()
    created = time.monotonic()
    await session.connect()
    await session.wait_until(lambda r: len(r.video) >= 1, timeout=60)
    first = time.monotonic()
    return session, {"created_s": round(created - start, 2), "first_frame_s": round(first - start, 2)}


async def with_the_head_taken(url: str, runs: int, one_run) -> list[dict]:
    """`one_run(run, head)` `runs` times, each once the worker nodes have gone, while another
    session holds the head's only slot (so each run's session needs a worker node)."""
    import ray

    head = ray.get_runtime_context().get_node_id()
    holder, _ = await timed_session(url)
    await holder.interrupt()
    try:
        rows = []
        for run in range(runs):
            await until(lambda: len(alive_nodes()) == 1, IDLE_TIMEOUT_S + 180, every=0.5)
            rows.append(await one_run(run, head))
        return rows
    finally:
        await holder.close()


async def node_start(url: str, runs: int) -> list[dict]:
    async def one_run(run: int, head: str) -> dict:
        cold, row = await timed_session(url)
        warm, warm_row = await timed_session(url)  # the worker's second slot: no node to start
        row.update(warm_first_frame_s=warm_row["first_frame_s"], on_worker=await session_node(cold.session_id) != head)
        print(f"  run {run + 1}: cold {row['created_s']} s to the session, {row['first_frame_s']} s to its "
              f"first frame; warm {row['warm_first_frame_s']} s", flush=True)
        for session in (cold, warm):
            await session.close()
        return row

    return await with_the_head_taken(url, runs, one_run)


async def node_loss(url: str, cluster, runs: int) -> list[dict]:
    async def one_run(run: int, head: str) -> dict:
        victim, _ = await timed_session(url)
        await victim.interrupt()
        node = await session_node(victim.session_id)
        assert node != head
        killed = time.monotonic()
        cluster.kill_node(node)
        await until(lambda: victim.lost, 60, every=0.05)
        noticed = time.monotonic()
        frames = len(victim.received.video)
        ready = await victim.reconnect(timeout=240)
        assert ready["resumed"]
        resumed = time.monotonic()
        await victim.wait_until(lambda r: len(r.video) > frames, timeout=60)
        row = {"noticed_s": round(noticed - killed, 2), "resumed_s": round(resumed - killed, 2),
               "first_frame_s": round(time.monotonic() - killed, 2),
               "new_node": await session_node(victim.session_id) not in (head, node)}
        print(f"  run {run + 1}: noticed {row['noticed_s']} s after the kill, resumed {row['resumed_s']} s, "
              f"first frame {row['first_frame_s']} s (on a new node: {row['new_node']})", flush=True)
        await victim.close()
        return row

    return await with_the_head_taken(url, runs, one_run)


async def ramp(url: str, top: int, step_s: float, tail_s: float) -> list[dict]:
    sessions: list[AvatarSession] = []
    talkers: list[asyncio.Task] = []
    samples: list[dict] = []
    start = time.monotonic()

    async def talk(session: AvatarSession) -> None:
        while True:
            turn_id = await session.say(LONG)
            await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=90)

    async def sample(phase: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            use = (await http.get("/api/health")).json()["lipsync_cache"]["deadline_use"]
        samples.append({"t": round(time.monotonic() - start, 1), "talking": len(talkers), "phase": phase,
                        "lipsync": replicas("LipSync"), "tts": replicas("TTS"), "nodes": len(alive_nodes()),
                        "deadline_use": use})

    # Start from the bottom: what the node-start runs scaled up has come back down.
    await until(lambda: replicas("LipSync") == 1 and replicas("TTS") == 1, 180, every=0.5)
    start = time.monotonic()
    try:
        for _ in range(top):
            session = AvatarSession(url, request_timeout=240)
            await session.start(timeout=60)
            await session.interrupt()
            sessions.append(session)
            talkers.append(asyncio.ensure_future(talk(session)))
            step_end = time.monotonic() + step_s
            while time.monotonic() < step_end:
                await sample("up")
                await asyncio.sleep(1)
        for task in talkers:
            task.cancel()
        await asyncio.gather(*talkers, return_exceptions=True)
        talkers.clear()
        for session in sessions:
            await session.interrupt()
        tail_end = time.monotonic() + tail_s
        while time.monotonic() < tail_end:
            await sample("silent")
            await asyncio.sleep(1)
    finally:
        for task in talkers:
            task.cancel()
        for session in sessions:
            await session.close()
    return samples


def print_ramp(samples: list[dict]) -> None:
    """One line per change of the replica counts or the talking sessions."""
    print("  t (s) | talking | LipSync | TTS | nodes | LipSync deadline use (a replica's last report)")
    last = None
    for s in samples:
        key = (s["talking"], s["lipsync"], s["tts"], s["nodes"], s["phase"])
        if key != last:
            print(f"  {s['t']:6.1f} | {s['talking']:7d} | {s['lipsync']:7d} | {s['tts']:3d} | {s['nodes']:5d} | "
                  f"{s['deadline_use']}")
            last = key


async def main_async(url: str, cluster, args) -> dict:
    print("node start to first frame (head slot taken):", flush=True)
    cold = await node_start(url, args.cold)
    print("node lost to the session back (head slot taken):", flush=True)
    loss = await node_loss(url, cluster, args.loss)
    print(f"ramp to {args.ramp} talking sessions, one every {args.step_s:g} s, then silence:", flush=True)
    samples = await ramp(url, args.ramp, args.step_s, args.tail_s)
    print_ramp(samples)
    return {"node_start": cold, "node_loss": loss, "ramp": samples,
            "loss_first_frame_median_s": med([r["first_frame_s"] for r in loss]),
            "cold_first_frame_median_s": med([r["first_frame_s"] for r in cold]),
            "warm_first_frame_median_s": med([r["warm_first_frame_s"] for r in cold])}


def main() -> None:
    import yaml
    from ray import serve

    from serve_app.local_cluster import FakeAutoscalingCluster, deploy_config, free_port

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=3, help="node-start runs")
    parser.add_argument("--loss", type=int, default=3, help="node-loss runs")
    parser.add_argument("--ramp", type=int, default=3, help="talking sessions at the top of the ramp")
    parser.add_argument("--step-s", type=float, default=25)
    parser.add_argument("--tail-s", type=float, default=60, help="how long to watch after the talking stops")
    parser.add_argument("--target-use", type=float, default=0.05, help="LipSync DeadlinePolicy target_use")
    parser.add_argument("--max-lipsync", type=int, default=3)
    parser.add_argument("--tts-target", type=float, default=0.5, help="TTS target_ongoing_requests")
    args = parser.parse_args()

    machine, load = print_machine()
    busy0, steal0, total0 = cpu_ticks()
    cluster = FakeAutoscalingCluster(HEAD, WORKERS, idle_timeout_s=IDLE_TIMEOUT_S)
    cluster.start()
    cluster.connect()
    try:
        lipsync_scaling = {"min_replicas": 1, "max_replicas": args.max_lipsync, "upscale_delay_s": 2,
                           "downscale_delay_s": 10, "look_back_period_s": 11,
                           "policy": {"policy_function": "serve_app.autoscaling:DeadlinePolicy",
                                      "policy_kwargs": {"target_use": args.target_use}}}
        tts_scaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": args.tts_target,
                       "upscale_delay_s": 2, "downscale_delay_s": 10, "look_back_period_s": 11}
        on_head = {"num_cpus": 0, "resources": {"models": 0.1}}
        overrides = {"lipsync": {"deployment": {"autoscaling_config": lipsync_scaling}},
                     "tts": {"deployment": {"autoscaling_config": tts_scaling, "ray_actor_options": on_head}}}
        config = {"proxy_location": "HeadOnly",
                  "applications": [{"name": "digital_human", "route_prefix": "/",
                                    "import_path": "serve_app.app:build_app",
                                    "args": {"profile": str(PROJECT_ROOT / "tests/fixtures/cluster.yaml")}}]}
        path = Path("/tmp/dh-bench-cluster.yaml")
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        deploy_config(path, port, timeout_s=240, overrides=overrides)
        report = asyncio.run(main_async(f"http://127.0.0.1:{port}", cluster, args))
        serve.shutdown()
    finally:
        cluster.shutdown()
    busy1, steal1, total1 = cpu_ticks()
    report.update(machine=machine, load_start=load, load_end=loadavg(), settings={
        "head": HEAD, "workers": WORKERS, "idle_timeout_s": IDLE_TIMEOUT_S, "lipsync_autoscaling": lipsync_scaling,
        "tts_autoscaling": tts_scaling}, busy_pct=round(100 * (busy1 - busy0) / (total1 - total0), 1),
        steal_pct=round(100 * (steal1 - steal0) / (total1 - total0), 1))
    print(f"cold first frame median {report['cold_first_frame_median_s']} s, warm "
          f"{report['warm_first_frame_median_s']} s; node lost to first frame median "
          f"{report['loss_first_frame_median_s']} s; CPU busy {report['busy_pct']}%, steal {report['steal_pct']}%; "
          f"load {load} -> {report['load_end']}")
    print(f"results: {write_results('cluster', report)}")


if __name__ == "__main__":
    main()
