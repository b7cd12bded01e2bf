"""Avatar benchmark: preparation time, engine frames per core per avatar kind, switch cost.

    python bench/avatars.py                 # everything (~5 min on 2 cores, plus the load wait)
    python bench/avatars.py --skip-switch   # only the offline parts (no cluster)

1. Preparation: a synthetic 10 s 1280x720 25 fps H.264 clip (skimage's astronaut panning
   across the frame) and the astronaut photo, prepared with `prepare_avatar` into a temporary
   folder; per-stage times from the progress callback, output size, frames. Median of --repeats.
2. Engine cost per avatar kind at its native size (sprite `avatars/default`, the photo, the
   prepared clip): `cv2.setNumThreads(1)`, 250 frames in chunks of 5 with a cycling viseme mix;
   frames per CPU-second (= fps per core), ms per frame, and `idle_frame` cost. Median of 3.
3. Switching in the running app (own local cluster): PATCH round trip, PATCH -> first frame of
   the new avatar at the client, and say -> first speech audio right after switching to an
   avatar the LipSync replica has not loaded yet versus one it has.
Prints the machine and load average and writes bench/results/avatars-<timestamp>.json;
bench/README.md explains the numbers.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sessions import SPEECH_RMS, loadavg, med, print_machine, r, server, write_results  # noqa: E402

from serve_app.config import PROJECT_ROOT as ROOT  # noqa: E402

VISEME_CYCLE = "XABCDEFGHXBCDCBAEFX"  # a mix of all shapes, with rests and closures
SAY = "Hello there, how are you today?"


def wait_for_quiet(limit: float, max_wait: float) -> list[float]:
    """Poll the 1-minute load every 30 s until it is below `limit` (at most `max_wait` s)."""
    deadline = time.monotonic() + max_wait
    while True:
        load = loadavg()
        if load[0] < limit:
            return load
        if time.monotonic() >= deadline:
            print(f"WARNING: 1-min load still {load[0]} after {max_wait:.0f} s; measuring anyway",
                  flush=True)
            return load
        print(f"waiting for the machine to calm down: load {load}", flush=True)
        time.sleep(30)


# --- 1. preparation ---------------------------------------------------------------------------
def make_clip(path: Path, seconds: float = 10.0, fps: int = 25) -> None:
    """1280x720 H.264: the astronaut (upscaled 1.4x) panning slowly left to right."""
    import av
    import cv2
    from skimage import data as skdata

    face = cv2.resize(skdata.astronaut(), (717, 717), interpolation=cv2.INTER_CUBIC)
    n = int(seconds * fps)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i in range(n):
            frame = np.full((720, 1280, 3), (70, 90, 110), np.uint8)
            x = round(120 + 320 * i / (n - 1))  # 320 px over the clip
            y = 1 + round(np.sin(i / 20))  # and a little bob (3 px of room)
            frame[y:y + 717, x:x + 717] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def time_prepare(source: Path, avatars_dir: Path, avatar_id: str) -> dict:
    from serve_app.avatars.prepare import prepare_avatar

    lasts: dict[str, float] = {}

    def progress(stage: str, fraction: float) -> None:
        lasts[stage] = time.perf_counter()  # a stage ends with its last report

    t0, c0 = time.perf_counter(), time.process_time()
    folder = prepare_avatar(source, avatar_id, avatars_dir, progress=progress)
    t1, c1 = time.perf_counter(), time.process_time()
    read_end = lasts.get("reading", t0)
    detect_end = lasts.get("detecting", read_end)
    stages = {"reading": read_end - t0, "detecting": detect_end - read_end, "writing": t1 - detect_end}
    manifest = json.loads((folder / "manifest.json").read_text())
    frames = folder / "frames"
    n_frames = len(list(frames.iterdir())) if frames.is_dir() else 1
    return {"total_s": t1 - t0, "cpu_s": c1 - c0, "stages_s": stages, "bytes": folder_size(folder),
            "n_frames": n_frames, "kind": manifest.get("kind"), "size": manifest.get("size"),
            "folder": str(folder)}


def bench_prepare(tmp: Path, repeats: int) -> dict:
    import cv2
    from skimage import data as skdata

    clip = tmp / "clip.mp4"
    t = time.perf_counter()
    make_clip(clip)
    print(f"synthetic clip: {clip.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - t:.1f} s", flush=True)
    photo = tmp / "astronaut.png"
    cv2.imwrite(str(photo), skdata.astronaut()[:, :, ::-1])

    out = {}
    for kind, source in (("video", clip), ("photo", photo)):
        runs = []
        for k in range(repeats):
            res = time_prepare(source, tmp / "avatars", f"{kind}{k}")
            runs.append(res)
            print(f"  prepare {kind} #{k + 1}: {res['total_s']:.2f} s "
                  + " ".join(f"{s} {v:.2f}" for s, v in res["stages_s"].items()), flush=True)
        out[kind] = {
            "runs": runs,
            "total_s": med([x["total_s"] for x in runs]),
            "cpu_s": med([x["cpu_s"] for x in runs]),
            "stages_s": {s: med([x["stages_s"][s] for x in runs]) for s in runs[0]["stages_s"]},
            "bytes": runs[0]["bytes"], "n_frames": runs[0]["n_frames"], "size": runs[0]["size"],
            "source_bytes": source.stat().st_size,
        }
    return out


# --- 2. engine cost ---------------------------------------------------------------------------
def bench_engine(kinds: dict[str, tuple[Path, str]], frames: int = 250, chunk: int = 5, repeats: int = 3) -> dict:
    import cv2

    from serve_app.engines.lipsync.base import SAMPLES_PER_FRAME, LipSyncChunk
    from serve_app.engines.lipsync.viseme_engine import VisemeLipSyncEngine

    cv2.setNumThreads(1)
    out = {}
    for kind, (avatars_dir, avatar_id) in kinds.items():
        engine = VisemeLipSyncEngine(avatars_dir)
        t = time.perf_counter()
        avatar = engine.load(avatar_id)
        load_s = time.perf_counter() - t
        avatar = engine.avatar(avatar_id)
        audio = np.zeros(chunk * SAMPLES_PER_FRAME, np.float32)
        visemes = [VISEME_CYCLE[i % len(VISEME_CYCLE)] for i in range(frames)]
        engine.render(LipSyncChunk(avatar_id, 0, audio, visemes[:chunk]), avatar)  # warm up
        runs = []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            for first in range(0, frames, chunk):
                engine.render(LipSyncChunk(avatar_id, first, audio, visemes[first:first + chunk]), avatar)
            c1, t1 = time.process_time(), time.perf_counter()
            for i in range(frames):
                engine.idle_frame(avatar_id, i)
            c2, t2 = time.process_time(), time.perf_counter()
            runs.append({"render_cpu_s": c1 - c0, "render_wall_s": t1 - t0,
                         "idle_cpu_s": c2 - c1, "idle_wall_s": t2 - t1})
        render_cpu = med([x["render_cpu_s"] for x in runs])
        render_wall = med([x["render_wall_s"] for x in runs])
        idle_cpu = med([x["idle_cpu_s"] for x in runs])
        w, h = avatar.size
        out[kind] = {
            "avatar": avatar_id, "size": [w, h], "load_s": load_s, "frames": frames, "chunk": chunk,
            "runs": runs,
            "fps_per_core": frames / render_cpu, "ms_per_frame_cpu": 1000 * render_cpu / frames,
            "ms_per_frame_wall": 1000 * render_wall / frames,
            "idle_ms_per_frame_cpu": 1000 * idle_cpu / frames,
            "idle_fps_per_core": frames / idle_cpu,
        }
        print(f"  engine {kind} {w}x{h}: {frames / render_cpu:.0f} fps/core, "
              f"{1000 * render_cpu / frames:.2f} ms/frame; idle {1000 * idle_cpu / frames:.2f} ms/frame",
              flush=True)
    return out


# --- 3. switching in the running app ------------------------------------------------------------
def colour_dist(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


async def bench_switch(url: str, video_folder: Path, n_switch: int) -> dict:
    import cv2
    import httpx
    from skimage import data as skdata

    from serve_app.client import AvatarSession

    admin = {"Authorization": f"Bearer {os.environ['DH_ADMIN_TOKEN']}"}
    tag = secrets.token_hex(3)
    photos = [f"bench-photo{k}-{tag}" for k in range(3)]
    video_id = f"bench-video-{tag}"
    created: list[str] = []
    res: dict = {"photo_ids": photos, "video_id": video_id}
    ok, png = cv2.imencode(".png", skdata.astronaut()[:, :, ::-1])
    http = httpx.AsyncClient(base_url=url, timeout=60)
    session = AvatarSession(url, keep_frames=lambda f: f.reshape(-1, 3).mean(0))
    try:
        uploads = []
        for avatar_id in photos:
            t = time.perf_counter()
            response = await http.post("/api/avatars", headers=admin, data={"id": avatar_id, "name": avatar_id},
                                       files={"file": ("source.png", png.tobytes(), "image/png")})
            response.raise_for_status()
            created.append(avatar_id)
            job_id = response.json()["job_id"]
            while True:
                job = (await http.get(f"/api/avatars/jobs/{job_id}", headers=admin)).json()
                if job["state"] in ("done", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.1)
            if job["state"] != "done":
                raise RuntimeError(f"upload of {avatar_id} ended {job}")
            uploads.append(time.perf_counter() - t)
        res["photo_upload_to_done_s"] = uploads
        # The prepared clip goes in as a copy (no second 15 s preparation); the manifest names it.
        tmp_copy = ROOT / "avatars" / f".tmp-{video_id}"
        shutil.copytree(video_folder, tmp_copy)
        manifest = json.loads((tmp_copy / "manifest.json").read_text())
        manifest.update(id=video_id, name=video_id)
        (tmp_copy / "manifest.json").write_text(json.dumps(manifest))
        created.append(video_id)
        os.rename(tmp_copy, ROOT / "avatars" / video_id)

        await session.start(timeout=60)
        await session.interrupt()
        await asyncio.sleep(1.0)
        rec = session.received
        colours: dict[str, np.ndarray] = {}

        async def settle(avatar_id: str) -> None:
            n = len(rec.video)
            await session.wait_until(lambda r_: len(r_.video) >= n + 12)
            colours[avatar_id] = np.mean([v.frame for v in rec.video[-5:]], axis=0)

        await settle("default")
        current = "default"

        async def switch(target: str) -> dict:
            nonlocal current
            old = colours[current]
            new = colours.get(target)

            def shows_new(c) -> bool:
                if new is None:
                    return colour_dist(c, old) > 12
                return colour_dist(c, new) < colour_dist(c, old)

            n = len(rec.video)
            t0 = time.monotonic()
            await session.update(avatar=target)
            t1 = time.monotonic()
            await session.wait_until(lambda r_: any(shows_new(v.frame) for v in r_.video[n:]), timeout=30)
            first = next(v for v in rec.video[n:] if shows_new(v.frame))
            was_known = new is not None
            current = target
            await settle(target)
            return {"to": target, "patch_ms": 1000 * (t1 - t0), "frame_ms": 1000 * (first.t - t0),
                    "first_time": not was_known,
                    "colour_gap": colour_dist(colours[target], old)}

        async def say() -> dict:
            await asyncio.sleep(0.3)
            n = len(rec.audio)
            t0 = time.monotonic()
            turn_id = await session.say(SAY)
            await session.wait_until(lambda r_: any(a.rms > SPEECH_RMS for a in r_.audio[n:]), timeout=30)
            first = next(a for a in rec.audio[n:] if a.rms > SPEECH_RMS and a.t >= t0)
            await session.interrupt()
            await session.wait_event(lambda e: e["type"] == "turn_end" and e.get("turn_id") == turn_id, timeout=30)
            return {"speech_ms": 1000 * (first.t - t0)}

        # Warm the pipeline: one say on the default avatar (not counted).
        await say()
        trials = []
        # First use of each uploaded/copied avatar: the LipSync replica has not loaded it.
        for target in photos + [video_id]:
            s = await switch(target)
            s.update(await say(), lipsync_cached=False)
            trials.append(s)
            print(f"  switch -> {target} (new): PATCH {s['patch_ms']:.0f} ms, frame {s['frame_ms']:.0f} ms, "
                  f"say->speech {s['speech_ms']:.0f} ms", flush=True)
            s = await switch("default")
            s.update(await say(), lipsync_cached=True)
            trials.append(s)
        # Alternate between the default and the first photo, both loaded everywhere now.
        for k in range(n_switch):
            target = photos[0] if k % 2 == 0 else "default"
            s = await switch(target)
            s.update(await say(), lipsync_cached=True)
            s["alternation"] = True
            trials.append(s)
            print(f"  switch -> {target}: PATCH {s['patch_ms']:.0f} ms, frame {s['frame_ms']:.0f} ms, "
                  f"say->speech {s['speech_ms']:.0f} ms", flush=True)
        alt = [t for t in trials if t.get("alternation")]
        new = [t for t in trials if not t["lipsync_cached"]]
        cached = [t for t in trials if t["lipsync_cached"]]
        res.update({
            "trials": trials,
            "patch_ms": med([t["patch_ms"] for t in alt]),
            "frame_ms": med([t["frame_ms"] for t in alt]),
            "first_switch_patch_ms": med([t["patch_ms"] for t in new]),
            "first_switch_frame_ms": med([t["frame_ms"] for t in new]),
            "say_uncached_ms": med([t["speech_ms"] for t in new]),
            "say_uncached_photo_ms": med([t["speech_ms"] for t in new if t["to"] != video_id]),
            "say_uncached_video_ms": med([t["speech_ms"] for t in new if t["to"] == video_id]),
            "say_cached_ms": med([t["speech_ms"] for t in cached]),
            "n_new": len(new), "n_cached": len(cached), "n_alternation": len(alt),
        })
        with contextlib.suppress(Exception):
            res["lipsync_cache"] = (await http.get("/api/health")).json().get("lipsync_cache")
    finally:
        await session.close()
        for avatar_id in created:
            with contextlib.suppress(Exception):
                await http.delete(f"/api/avatars/{avatar_id}", headers=admin)
        await http.aclose()
        for avatar_id in created:  # whatever the API did not remove
            shutil.rmtree(ROOT / "avatars" / avatar_id, ignore_errors=True)
    return res


# --- report -----------------------------------------------------------------------------------
def summarize(report: dict) -> None:
    prep = report.get("prepare", {})
    if prep:
        print("\n== 1. preparation (median of %d) ==" % len(prep["video"]["runs"]))
        print(f"{'source':<28} {'total s':>8} {'cpu s':>7} {'reading':>8} {'detect':>7} {'writing':>8} "
              f"{'frames':>6} {'output MB':>9}")
        for kind, label in (("video", "10 s 1280x720 25 fps mp4"), ("photo", "512x512 PNG photo")):
            p = prep[kind]
            st = p["stages_s"]
            print(f"{label:<28} {p['total_s']:>8.2f} {p['cpu_s']:>7.2f} {st['reading']:>8.2f} "
                  f"{st['detecting']:>7.2f} {st['writing']:>8.2f} {p['n_frames']:>6} {p['bytes'] / 1e6:>9.2f}")
    eng = report.get("engine", {})
    if eng:
        print("\n== 2. engine, 1 OpenCV thread, 250 frames in chunks of 5 (median of 3) ==")
        print(f"{'kind':<7} {'size':>9} {'fps/core':>9} {'ms/frame cpu':>13} {'ms/frame wall':>14} "
              f"{'idle ms/frame':>14} {'load s':>7}")
        for kind, e in eng.items():
            print(f"{kind:<7} {'%dx%d' % tuple(e['size']):>9} {e['fps_per_core']:>9.0f} "
                  f"{e['ms_per_frame_cpu']:>13.2f} {e['ms_per_frame_wall']:>14.2f} "
                  f"{e['idle_ms_per_frame_cpu']:>14.2f} {e['load_s']:>7.2f}")
    sw = report.get("switch")
    if sw:
        print("\n== 3. avatar switch in the running app (local cluster) ==")
        print(f"alternating default <-> photo, {sw['n_alternation']} switches (medians):")
        print(f"  PATCH round trip                        {r(sw['patch_ms'], 0)} ms")
        print(f"  PATCH sent -> first frame of new avatar {r(sw['frame_ms'], 0)} ms")
        print(f"first switch to a new avatar ({sw['n_new']}: 3 photos, 1 video):")
        print(f"  PATCH round trip                        {r(sw['first_switch_patch_ms'], 0)} ms")
        print(f"  PATCH sent -> first frame of new avatar {r(sw['first_switch_frame_ms'], 0)} ms")
        print("say -> first speech audio at the client, right after a switch:")
        print(f"  avatar not yet loaded by LipSync        {r(sw['say_uncached_ms'], 0)} ms "
              f"(photo {r(sw['say_uncached_photo_ms'], 0)}, video {r(sw['say_uncached_video_ms'], 0)})")
        print(f"  avatar already loaded ({sw['n_cached']} trials)      {r(sw['say_cached_ms'], 0)} ms")
        print(f"  photo upload -> job done: {', '.join(f'{x:.2f}' for x in sw['photo_upload_to_done_s'])} s")
        cache = (sw.get("lipsync_cache") or {}).get("avatars") or {}
        if cache:
            print("LipSync replica cache at the end: "
                  + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in cache.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="preparations per source")
    parser.add_argument("--switches", type=int, default=10, help="alternating switches")
    parser.add_argument("--skip-switch", action="store_true", help="no cluster: parts 1 and 2 only")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait until the 1-min load is below")
    parser.add_argument("--max-wait", type=float, default=600, help="s to wait for that at most")
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    args = parser.parse_args()

    machine, load_before = print_machine()
    load_start = wait_for_quiet(args.max_load, args.max_wait)
    print(f"load at the start of measuring: {load_start}", flush=True)
    report: dict = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
                    "load_before": load_before, "load_start": load_start}
    with tempfile.TemporaryDirectory(prefix="dh-bench-avatars-") as tmp_name:
        tmp = Path(tmp_name)
        print("\n1. preparation", flush=True)
        report["prepare"] = bench_prepare(tmp, args.repeats)
        report["load_after_prepare"] = loadavg()
        print("\n2. engine", flush=True)
        video_folder = Path(report["prepare"]["video"]["runs"][0]["folder"])
        report["engine"] = bench_engine({
            "sprite": (ROOT / "avatars", "default"),
            "photo": (tmp / "avatars", "photo0"),
            "video": (tmp / "avatars", "video0"),
        })
        report["load_after_engine"] = loadavg()
        if not args.skip_switch:
            print("\n3. switching", flush=True)
            os.environ["DH_ADMIN_TOKEN"] = secrets.token_urlsafe(16)  # before the replicas start
            with server(None, args.config) as (url, _, _):
                report["load_switch_start"] = loadavg()
                report["switch"] = asyncio.run(bench_switch(url, video_folder, args.switches))
    report["load_after"] = loadavg()
    report["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    summarize(report)
    print(f"\nload average: before {load_before}, measuring started at {load_start}, "
          f"after {report['load_after']}")
    out = write_results("avatars", report)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
