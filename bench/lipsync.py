"""Neural lip-sync throughput: frames per second per batch size, and concurrent 25 fps
sessions one device sustains with cross-session batching.

    python bench/lipsync.py                                   # all engines, GPU if present
    python bench/lipsync.py --engines wav2lip96 --batches 1,4,16 --sessions 1,2,4

Weights are random (speed does not depend on their values), written in the official layouts
to a temporary folder: Wav2Lip 96 and LiveTalking's 256 (`save_official_checkpoint`), MuseTalk
1.5 at its real size (`write_random_weights(tiny=False)`, ~3.5 GB). The avatar is the
astronaut photo prepared as usual (512x512 frames).

1. Model: `engine.generate` on B frames (fp16 on a GPU, fp32 on a CPU): frames per second at
   each batch size, median of --repeats. Audio features per 5-frame chunk (mel windows, or
   the whisper encoder for MuseTalk, batched over sessions) and the paste-back per frame are
   timed on their own.
2. Sessions: a local Ray cluster runs the LipSync deployment (the engine on one device, a
   batching user_config). N simulated sessions each send a 5-frame chunk every 200 ms on a
   fixed schedule, with the audio context and look-ahead a real session sends. N is sustained
   when the sessions together got >= 99% of 25 fps each over the run and the p95 of
   chunk latency is under 200 ms (a chunk arrives before its frames are due).
Prints the machine and writes bench/results/lipsync-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sessions import print_machine, write_results  # noqa: E402

from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME, LipSyncChunk  # noqa: E402

CHUNK = 5  # frames per chunk, as the profiles send
ENGINES = ("wav2lip96", "wav2lip256", "musetalk")


def weights(name: str, folder: Path, tiny: bool = False) -> tuple[str, dict]:
    """(backend, options) for `name`, with random weights written under `folder` (`tiny`: a
    shrunken MuseTalk, for a dry run that only checks the benchmark works)."""
    if name.startswith("wav2lip"):
        from serve_app.engines.lipsync.neural.wav2lip import Wav2Lip, save_official_checkpoint

        path = folder / f"{name}.pth"
        save_official_checkpoint(Wav2Lip(name.removeprefix("wav2lip")), path)
        return "wav2lip", {"checkpoint": str(path)}
    from serve_app.engines.lipsync.neural.musetalk import write_random_weights

    write_random_weights(folder / "musetalk", tiny=tiny)
    return "musetalk", {"models_dir": str(folder / "musetalk")}


def avatar(folder: Path) -> Path:
    from skimage import data

    from serve_app.avatars import prepare_avatar

    photo = folder / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    prepare_avatar(photo, "astro", folder / "avatars")
    return folder / "avatars"


def speech(frames: int, seed: int = 0) -> np.ndarray:
    t = np.arange(frames * SAMPLES_PER_FRAME) / 16_000
    phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.8 * t + seed)) / 16_000
    return (0.3 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def chunk_at(engine, audio: np.ndarray, first: int, avatar_id: str = "astro") -> LipSyncChunk:
    """Frames [first, first + CHUNK) of a long reply, sent as a session sends them."""
    start = max(0, first - engine.context_frames) * SAMPLES_PER_FRAME
    end = (first + CHUNK + engine.lookahead_frames) * SAMPLES_PER_FRAME
    return LipSyncChunk(avatar_id, first_frame=first, audio=audio[first * SAMPLES_PER_FRAME:(first + CHUNK) * SAMPLES_PER_FRAME],
                        segment=audio[start:end], segment_offset=start, reply_frame=first)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (cuDNN autotune, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def model_throughput(engine, batches: list[int], repeats: int) -> dict:
    audio = speech(40 * 25)
    a = engine.load("astro")
    feats = engine.features([chunk_at(engine, audio, 50 + CHUNK * i) for i in range(max(batches) // CHUNK + 1)])
    flat = np.concatenate(feats)
    out = {"fps_by_batch": {}}
    for b in batches:
        rows = np.resize(np.arange(len(flat)), b)
        s = timed(lambda: engine.generate([a] * b, [0] * b, flat[rows]), repeats)
        out["fps_by_batch"][b] = round(b / s, 1)
        print(f"  batch {b:>3}: {b / s:8.1f} frames/s  ({1000 * s:.1f} ms per call)", flush=True)
    for sessions in (1, 16):
        chunks = [chunk_at(engine, audio, 50 + 7 * i) for i in range(sessions)]
        s = timed(lambda: engine.features(chunks), repeats)
        out[f"features_ms_{sessions}_chunks"] = round(1000 * s, 2)
        print(f"  audio features for {sessions} chunk(s) of {CHUNK} frames: {1000 * s:.2f} ms", flush=True)
    chunk = chunk_at(engine, audio, 50)
    faces = engine.generate([a] * CHUNK, [0] * CHUNK, feats[0])
    s = timed(lambda: engine.compose(chunk, a, faces, [0] * CHUNK), repeats)
    out["paste_ms_per_frame"] = round(1000 * s / CHUNK, 2)
    print(f"  compose into the 512x512 frame: {out['paste_ms_per_frame']} ms per frame", flush=True)
    return out


async def run_sessions(handle, engine, n: int, seconds: float) -> dict:
    audio = speech(int(seconds * 25) + 200)
    latencies: list[float] = []
    frames = [0] * n
    slips: list[float] = []  # how late each chunk went out (the previous one came back late)

    async def session(i: int) -> None:
        t0 = time.monotonic() + 0.2 * i / n  # sessions spread over the 200 ms period
        k = 0
        while True:
            due = t0 + 0.2 * k
            if due - t0 >= seconds:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent = time.monotonic()
            slips.append(sent - due)
            result = await handle.options(multiplexed_model_id="astro").render.remote(chunk_at(engine, audio, 20 + CHUNK * k))
            latencies.append(time.monotonic() - sent)
            frames[i] += len(result)
            k += 1

    start = time.monotonic()
    await asyncio.gather(*(session(i) for i in range(n)))
    wall = time.monotonic() - start
    p95 = float(np.percentile(latencies, 95))
    # Sustained: every chunk went out on schedule (none waited for a late predecessor by more
    # than a frame) and 95% came back within their 200 ms period.
    return {"sessions": n, "fps_per_session": round(sum(frames) / wall / n, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1), "p95_ms": round(1000 * p95, 1),
            "max_slip_ms": round(1000 * max(slips), 1), "sustained": p95 < 0.2 and max(slips) < 0.04}


def sessions_sustained(backend: str, options: dict, avatars: Path, engine, counts: list[int], seconds: float,
                       max_batch: int, wait_s: float, gpu: bool) -> list[dict]:
    import ray
    from ray import serve

    from serve_app.deployments.lipsync import LipSyncDeployment
    from serve_app.local_cluster import run_app

    ray.init(num_gpus=1 if gpu else 0, include_dashboard=False, namespace="serve", log_to_driver=False)
    try:
        app = LipSyncDeployment.options(
            num_replicas=1, max_ongoing_requests=256,
            ray_actor_options={"num_cpus": 1, "num_gpus": 1 if gpu else 0},
            user_config={"max_batch_size": max_batch, "batch_wait_timeout_s": wait_s},
        ).bind(backend, options, avatars)
        run_app(app, "lipsync_bench", "/lipsync-bench", timeout_s=600)
        handle = serve.get_app_handle("lipsync_bench")
        results = []
        for n in counts:
            r = asyncio.run(run_sessions(handle, engine, n, seconds))
            cache = asyncio.run(_cache(handle))
            r["median_batch"] = statistics.median(cache["recent_batch_sizes"]) if cache["recent_batch_sizes"] else None
            print(f"  {n:>3} sessions: {r['fps_per_session']:5.2f} fps each, chunk latency p50 {r['p50_ms']} / "
                  f"p95 {r['p95_ms']} ms, median batch {r['median_batch']} chunks -> "
                  f"{'sustained' if r['sustained'] else 'NOT sustained'}", flush=True)
            results.append(r)
            if not r["sustained"]:
                break
        return results
    finally:
        serve.shutdown()
        ray.shutdown()


async def _cache(handle) -> dict:
    return await handle.cache.remote()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--batches", default="1,2,4,8,16,32,64")
    p.add_argument("--sessions", default="1,2,4,8,12,16,20,24,32,40,48,64")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each sessions run")
    p.add_argument("--max-batch", type=int, default=16, help="chunks per @serve.batch call")
    p.add_argument("--wait", type=float, default=0.01, help="batch_wait_timeout_s")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-sessions", action="store_true")
    p.add_argument("--tiny-musetalk", action="store_true", help="shrunken MuseTalk weights (a dry run)")
    p.add_argument("--out", type=Path, help="also write the results JSON here")
    args = p.parse_args()

    import torch

    from serve_app.engines.lipsync import create_lipsync_engine

    machine, load = print_machine()
    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if gpu else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}", flush=True)
    report = {"machine": machine, "load_before": load, "device": device, "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        avatars = avatar(tmp)
        for name in args.engines.split(","):
            print(f"\n== {name}", flush=True)
            backend, options = weights(name, tmp, args.tiny_musetalk)
            engine = create_lipsync_engine(backend, avatars_dir=avatars, **options)
            result = model_throughput(engine, [int(b) for b in args.batches.split(",")], args.repeats)
            result["context_frames"], result["lookahead_frames"] = engine.context_frames, engine.lookahead_frames
            print(f"  audio look-ahead: {engine.lookahead_frames} frames ({40 * engine.lookahead_frames} ms) "
                  "added to the reply latency", flush=True)
            if not args.skip_sessions:
                result["sessions"] = sessions_sustained(
                    backend, options, avatars, engine, [int(n) for n in args.sessions.split(",")],
                    args.seconds, args.max_batch, args.wait, gpu)
                ok = [r["sessions"] for r in result["sessions"] if r["sustained"]]
                result["max_sessions_sustained"] = max(ok) if ok else 0
                print(f"  => {result['max_sessions_sustained']} concurrent 25 fps sessions sustained", flush=True)
            report["engines"][name] = result
            del engine
            if gpu:
                torch.cuda.empty_cache()
    out = write_results("lipsync", report)
    if args.out:
        args.out.write_text(out.read_text())
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
