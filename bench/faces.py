"""Photo and video faces, old mouth against new, judged by a model that did not place them.

    python -m bench.faces                  # from the project root; ~3 min on 2 cores
    python -m bench.faces --sheets docs/faces   # also write the picture sheets there

Three faces: scikit-image's astronaut (a colour photo, smiling with her teeth showing), a
low-resolution grayscale copy of her (160 px, shown at 320), and a talking clip: 30 s of the
astronaut whose mouth really moves, made here by rendering her photo avatar (the new mouth)
along Piper speech, written as H.264 and prepared as a video avatar. Each is prepared
(timed), then rendered twice along the same Piper sentences: "old", the box-shaped warp with
a dark ellipse that avatars without landmarks get, and "new", the landmark warp.

What a client receives is approximated by a VP8 round trip (libvpx at 1 Mb/s, the frames
then decoded), the codec the WebRTC sessions prefer. On those frames dlib's 68-point model
(tests/face_judge.py) reads the inner lips' opening per frame:
- found: the share of talking frames where it finds the face;
- r: Pearson correlation of the opening with the speech envelope (RMS per 40 ms frame), at
  the best lag within +-1 frame;
- open/rest: the mean opening on open vowels (visemes C and D) over the idle frame's;
- closed: the mean opening on P B M (viseme A) and in silence within the speech;
- seam: the mean vertical gradient on the mask's edge ring, talking over idle (1.0: none added).
CPU: ms per talking frame at 512x512 on one thread (cv2.setNumThreads(1)), the VP8 encode of
a frame, and talking sessions per core from their sum. Prints the machine, its load and steal,
and writes bench/results/faces-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

from actors.capacity import cpu_ticks
from bench.sessions import print_machine, write_results
from serve_app.avatars import prepare_avatar
from serve_app.engines.audio import StreamResampler
from serve_app.engines.lipsync.base import FPS, SAMPLES_PER_FRAME, SPEECH_RATE, LipSyncChunk
from serve_app.engines.lipsync.viseme_engine import VisemeLipSyncEngine
from serve_app.engines.lipsync.visemes import VisemeTrack
from serve_app.engines.tts.piper_tts import PiperTTS
from tests.face_judge import mouth_opening

TEXT = ("Hello, I am the astronaut. Please bring me a map, a bag and my boots. "
        "Papa made a mop for Bob. What a wonderful day for a walk by the water!")
CHUNK = 5  # frames per lip-sync call, as the cpu profile's chunk_frames
SHEET = ("X", "A", "B", "D", "F")  # rest, closed, half-open, open, rounded


def speech() -> tuple[np.ndarray, list[str]]:
    """Piper's voice saying TEXT: 16 kHz float32 audio and one viseme per 40 ms frame."""
    async def synth():
        return [c async for c in PiperTTS(threads=1).stream(TEXT)]

    chunks = asyncio.run(synth())
    track = VisemeTrack()
    resampler = StreamResampler(chunks[0].sample_rate, SPEECH_RATE)
    audio = []
    for chunk in chunks:
        track.push(chunk)
        audio.append(resampler.push(chunk.samples))
    pcm = np.concatenate([*audio, resampler.flush()]).astype(np.float32)
    n = len(pcm) // SAMPLES_PER_FRAME
    return pcm[: n * SAMPLES_PER_FRAME], track.visemes(0, n)


def render(engine: VisemeLipSyncEngine, avatar_id: str, pcm: np.ndarray, visemes: list[str],
           first: int = 0) -> tuple[np.ndarray, float]:
    """All frames of the speech, chunk by chunk as the LipSync deployment renders them, and
    the median ms per frame."""
    n = len(visemes)
    frames, per_frame = [], []
    for start in range(0, n, CHUNK):
        k = min(CHUNK, n - start)
        chunk = LipSyncChunk(avatar_id, first + start, pcm[start * SAMPLES_PER_FRAME:(start + k) * SAMPLES_PER_FRAME],
                             visemes[start:start + k], fade_in=2 if start == 0 else 0,
                             fade_out=2 if start + k == n else 0)
        t = time.perf_counter()
        frames.append(engine.render(chunk))
        per_frame.append((time.perf_counter() - t) * 1000 / k)
    return np.concatenate(frames), statistics.median(per_frame)


def vp8_encoder(w: int, h: int, **options: str) -> av.CodecContext:
    """libvpx VP8 at 1 Mb/s in real-time mode, as the WebRTC sessions send it."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuv420p"
    encoder.bit_rate, encoder.framerate = 1_000_000, FPS
    encoder.options = {"deadline": "realtime", "cpu-used": "8", **options}
    return encoder


def vp8_round_trip(frames: np.ndarray) -> tuple[np.ndarray, float]:
    """The frames after libvpx VP8 at 1 Mb/s and back, and the median encode ms per frame."""
    h, w = frames.shape[1:3]
    encoder = vp8_encoder(w, h)
    decoder = av.CodecContext.create("libvpx", "r")
    out, took = [], []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        t = time.perf_counter()
        packets = encoder.encode(frame)
        took.append((time.perf_counter() - t) * 1000)
        for packet in packets:
            out += [f.to_ndarray(format="rgb24") for f in decoder.decode(packet)]
    for packet in encoder.encode(None):
        out += [f.to_ndarray(format="rgb24") for f in decoder.decode(packet)]
    return np.stack(out[: len(frames)]), statistics.median(took)


def judge(frames: np.ndarray, idle: np.ndarray, pcm: np.ndarray, visemes: list[str]) -> dict:
    openings = [mouth_opening(f) for f in frames]
    found = [o is not None for o in openings]
    opening = np.array([o if o is not None else np.nan for o in openings])
    envelope = np.sqrt((pcm.reshape(-1, SAMPLES_PER_FRAME) ** 2).mean(axis=1))[: len(opening)]
    best = max((_corr(opening, envelope, lag), lag) for lag in (-1, 0, 1))
    rest = mouth_opening(idle) or np.nan
    loud = envelope > 0.1 * envelope.max()
    v = np.array(visemes[: len(opening)])
    silence = ~loud & (np.arange(len(v)) > np.argmax(loud)) & (np.arange(len(v)) < len(v) - np.argmax(loud[::-1]))
    return {
        "found": round(float(np.mean(found)), 3),
        "r": round(best[0], 3), "lag": best[1],
        "rest": round(float(rest), 3),
        "open_over_rest": round(float(np.nanmean(opening[np.isin(v, ["C", "D"])]) / max(rest, 0.02)), 2),
        "closed_pbm": round(float(np.nanmean(opening[v == "A"])), 3),
        "closed_silence": round(float(np.nanmean(opening[silence])), 3) if silence.any() else None,
    }


def _corr(opening: np.ndarray, envelope: np.ndarray, lag: int) -> float:
    a, b = (opening[lag:], envelope[: len(envelope) - lag]) if lag >= 0 else (opening[:lag], envelope[-lag:])
    ok = ~np.isnan(a)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def seam(talking: np.ndarray, idle: np.ndarray, avatar) -> float:
    """Vertical gradient on the mask's edge ring (where it is between 0.05 and 0.5), talking
    over idle, as the mean over talking frames."""
    x0, y0, x1, y1 = avatar.mouth_box(0)
    mask = cv2.imread(str(avatar.folder / "mask.png"), cv2.IMREAD_GRAYSCALE) / 255.0
    ring = (mask > 0.05) & (mask < 0.5)

    def gradient(img: np.ndarray) -> float:
        gray = img[y0:y1, x0:x1].astype(np.float32).mean(axis=2)
        return float(np.abs(np.diff(gray, axis=0))[ring[1:]].mean())

    base = gradient(idle)
    return round(float(np.mean([gradient(f) for f in talking[::5]])) / base, 3)


def old_copy(folder: Path, root: Path) -> str:
    """The same avatar without its landmarks: rendered by the older box-shaped warp."""
    copy = root / f"{folder.name}-old"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.pop("landmarks"), manifest.pop("landmarks_hidden")
    (copy / "manifest.json").write_text(json.dumps({**manifest, "id": copy.name}))
    return copy.name


def timed_prepare(source: Path, avatar_id: str, root: Path) -> tuple[Path, float]:
    t = time.perf_counter()
    folder = prepare_avatar(source, avatar_id, root, max_seconds=60)
    return folder, time.perf_counter() - t


def talking_clip(engine: VisemeLipSyncEngine, avatar_id: str, pcm: np.ndarray, visemes: list[str],
                 path: Path, seconds: float) -> None:
    """`seconds` of the avatar saying the speech again and again (with a pause between), H.264."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width = stream.height = 512
        stream.pix_fmt = "yuv420p"
        pause = ["X"] * FPS
        silent = np.zeros(FPS * SAMPLES_PER_FRAME, np.float32)
        written = 0
        while written < seconds * FPS:
            frames, _ = render(engine, avatar_id, np.concatenate([pcm, silent]), visemes + pause, first=written)
            for rgb in frames[: int(seconds * FPS) - written]:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            written += len(frames)
        out.mux(stream.encode())


def sheet(engine: VisemeLipSyncEngine, ids: dict[str, str], path: Path) -> None:
    """Rows old and new; columns rest, closed, half-open, open, rounded: the mouth region."""
    rows = []
    for label, avatar_id in ids.items():
        avatar = engine.avatar(avatar_id)
        x0, y0, x1, y1 = avatar.mouth_box(0)
        pad = (y1 - y0) // 3
        tiles = [avatar.idle_frame(0)] + [avatar.frame(0, v) for v in SHEET[1:]]
        tiles = [cv2.resize(t[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad], (192, 192)) for t in tiles]
        label_tile = np.full((192, 80, 3), 255, np.uint8)
        cv2.putText(label_tile, label, (8, 100), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
        rows.append(np.hstack([label_tile, *tiles]))
    header = np.full((36, rows[0].shape[1], 3), 255, np.uint8)
    for i, name in enumerate(("rest", "closed (P B M)", "half-open", "open", "rounded")):
        cv2.putText(header, name, (88 + 192 * i, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.vstack([header, *rows]), cv2.COLOR_RGB2BGR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-seconds", type=float, default=30.0)
    parser.add_argument("--sheets", type=Path, help="write the picture sheets into this folder")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    machine, load = print_machine()
    ticks0 = cpu_ticks()
    report: dict = {"machine": machine, "load_before": load, "faces": {}}
    pcm, visemes = speech()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "avatars"
        engine = VisemeLipSyncEngine(root)
        sources = Path(tmp)
        gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
        gray = cv2.resize(cv2.resize(gray, (160, 160), interpolation=cv2.INTER_AREA), (320, 320))
        for name, image in (("astronaut", data.astronaut()), ("low-res-gray", np.repeat(gray[..., None], 3, 2))):
            cv2.imwrite(str(sources / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        prepared = {}
        for name in ("astronaut", "low-res-gray"):
            prepared[name] = timed_prepare(sources / f"{name}.png", name, root)
        talking_clip(engine, "astronaut", pcm, visemes, sources / "clip.mp4", args.clip_seconds)
        prepared["clip"] = timed_prepare(sources / "clip.mp4", "clip", root)
        for name, (folder, prep_s) in prepared.items():
            print(f"{name}: prepared in {prep_s:.1f} s", flush=True)
            result = {"prepare_s": round(prep_s, 2)}
            ids = {"old": old_copy(folder, root), "new": folder.name}
            for label, avatar_id in ids.items():
                frames, render_ms = render(engine, avatar_id, pcm, visemes)
                received, encode_ms = vp8_round_trip(frames)
                idle = engine.avatar(avatar_id).idle_frame(0)
                result[label] = {**judge(received, idle, pcm, visemes), "seam": seam(frames, idle, engine.avatar(avatar_id)),
                                 "render_ms": round(render_ms, 2), "vp8_encode_ms": round(encode_ms, 2),
                                 "sessions_per_core": round(1000 / (FPS * (render_ms + encode_ms)), 1)}
                print(f"  {label}: {result[label]}", flush=True)
            if args.sheets:
                sheet(engine, ids, args.sheets / f"{name}.png")
            report["faces"][name] = result
    busy0, steal0, total0 = ticks0
    busy1, steal1, total1 = cpu_ticks()
    report["busy_pct"] = round(100 * (busy1 - busy0) / (total1 - total0), 1)
    report["steal_pct"] = round(100 * (steal1 - steal0) / (total1 - total0), 1)
    report["load_after"] = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    print(f"steal {report['steal_pct']}% of CPU time, load after {report['load_after']}")
    print(f"results: {write_results('faces', report)}")


if __name__ == "__main__":
    main()
