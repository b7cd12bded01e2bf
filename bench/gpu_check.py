"""The GPU check: what to run, in one go, the day a machine with one NVIDIA GPU is at hand.

    bash bench/gpu_check.sh [--out FILE]    # on the GPU machine: at most ~8 minutes
    bash bench/gpu_check.sh --dry           # the same steps on the CPU at toy sizes (CI runs it)

Steps, each bounded in time (a step past its share is stopped and reported, the rest go on):
1. The neural engines' tests (Wav2Lip and MuseTalk, models and engines) with
   DH_TEST_DEVICE=cuda. Dry: collected only, on the CPU (they run in the suite anyway).
2. `bench/lipsync.py` for Wav2Lip 96, Wav2Lip 256 and MuseTalk 1.5 (random weights, full
   size): frames/s at batch 1, 8 and 16, the sessions one GPU sustains at 25 fps, and the
   paste-back per frame. Dry: Wav2Lip 96 and a tiny MuseTalk, batch 1 and 2, no sessions.
3. Piper on CUDA (onnxruntime-gpu's CUDA provider): real-time factor and first chunk. Dry: CPU.
4. The CPU a session needs beside the GPU: paste-back plus a 512x512 VP8 encode per frame
   (an H100 has no hardware video encoder), as cores per 25 fps session.
Writes a Markdown section ready to paste into BENCHMARKS.md (default
bench/results/gpu_check-<time>.md) naming the card, and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sessions import ROOT, machine_info

NEURAL_TESTS = ["tests/unit/test_wav2lip_model.py", "tests/unit/test_wav2lip_engine.py",
                "tests/unit/test_musetalk.py", "tests/unit/test_musetalk_engine.py"]
BUDGET_S = {"tests": 150, "lipsync": 240, "piper": 40, "encode": 20}  # 7.5 min together
FULL = {"engines": "wav2lip96,wav2lip256,musetalk", "batches": "1,8,16", "sessions": "1,2,4,8,12,16,24,32,48,64"}
DRY = {"engines": "wav2lip96,musetalk", "batches": "1,2"}


def run(step: str, command: list[str], env: dict | None = None) -> tuple[int | None, str]:
    """(exit code, or None when stopped at its budget; the output's tail)."""
    try:
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                              text=True, timeout=BUDGET_S[step])
        return done.returncode, (done.stdout + done.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return None, out[-3000:]


def neural_tests(device: str, dry: bool) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NEURAL_TESTS]
    code, tail = run("tests", command + (["--collect-only"] if dry else []), {"DH_TEST_DEVICE": device})
    summary = next((line.strip() for line in reversed(tail.splitlines()) if " passed" in line or " failed" in line
                    or "tests collected" in line or " error" in line), "no summary")
    return {"exit": code, "summary": summary}


def lipsync(dry: bool, out: Path) -> dict:
    sizes = DRY if dry else FULL
    command = [sys.executable, "bench/lipsync.py", "--engines", sizes["engines"], "--batches", sizes["batches"],
               "--out", str(out)]
    command += ["--skip-sessions", "--repeats", "1", "--tiny-musetalk"] if dry else ["--sessions", sizes["sessions"]]
    code, tail = run("lipsync", command)
    if code != 0 or not out.exists():
        return {"exit": code, "tail": tail[-800:]}
    return {"exit": code, **json.loads(out.read_text())}


def piper(device: str) -> dict:
    code = f"""
import asyncio, json, time
from serve_app.engines.tts.piper_tts import PiperTTS
tts = PiperTTS(device={device!r}, threads=1)
text = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods."
async def once():
    t, first, samples = time.perf_counter(), None, 0
    async for chunk in tts.stream(text):
        first = first or time.perf_counter() - t
        samples += len(chunk.samples)
    return time.perf_counter() - t, first, samples / tts.sample_rate
runs = [asyncio.run(once()) for _ in range(5)]
print(json.dumps({{"rtf": sorted(r[0] / r[2] for r in runs)[2], "first_ms": sorted(1000 * r[1] for r in runs)[2]}}))
"""
    exit_code, tail = run("piper", [sys.executable, "-c", code])
    try:
        return {"exit": exit_code, **json.loads(tail.strip().splitlines()[-1])}
    except (ValueError, IndexError):
        return {"exit": exit_code, "tail": tail[-800:]}


def vp8_encode_ms() -> float:
    """Median ms to encode one 512x512 frame with libvpx VP8 in real-time mode, one thread."""
    import av
    import numpy as np

    from bench.faces import vp8_encoder

    encoder = vp8_encoder(512, 512, threads="1")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (512, 512, 3), np.uint8)
    took = []
    for i in range(100):
        frame = np.roll(base, i, axis=1)
        video = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
        video.pts = i
        t = time.perf_counter()
        encoder.encode(video)
        took.append((time.perf_counter() - t) * 1000)
    return statistics.median(took[10:])


def markdown(report: dict) -> str:
    lines = [f"## GPU check on {report['device']} ({report['mode']}, {report['date']})", "",
             f"Machine: {report['machine']['cores']} cores, {report['machine']['cpu_model']}. "
             f"Load {report['load']}.", "",
             f"- Neural engine tests on `{report['test_device']}`: {report['tests']['summary']} "
             f"(exit {report['tests']['exit']}).",
             f"- Piper on `{report['test_device']}`: RTF {_num(report['piper'].get('rtf'), 3)}, first chunk "
             f"{_num(report['piper'].get('first_ms'), 0)} ms (median of 5).",
             f"- VP8 encode of a 512x512 frame on one CPU thread: {report['encode_ms']:.2f} ms.", "",
             "| engine | fps batch 1 | fps batch 8 | fps batch 16 | sessions at 25 fps | paste ms/frame | "
             "CPU cores per session (paste + encode) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, result in report["lipsync"].get("engines", {}).items():
        fps = result.get("fps_by_batch", {})
        cores = 25 * (result.get("paste_ms_per_frame", 0) + report["encode_ms"]) / 1000
        lines.append(f"| {name} | {_num(fps.get('1'))} | {_num(fps.get('8'))} | {_num(fps.get('16'))} | "
                     f"{result.get('max_sessions_sustained', 'not run')} | {result.get('paste_ms_per_frame')} | "
                     f"{cores:.2f} |")
    if report["lipsync"].get("exit") != 0:
        lines += ["", f"bench/lipsync.py did not finish (exit {report['lipsync'].get('exit')}):", "```",
                  report["lipsync"].get("tail", ""), "```"]
    return "\n".join(lines) + "\n"


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="on the CPU at toy sizes: checks the steps work")
    parser.add_argument("--out", type=Path, help="the Markdown file (default bench/results/gpu_check-<time>.md)")
    args = parser.parse_args()
    import torch

    if not args.dry and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run on a machine with an NVIDIA GPU, or pass --dry to check the steps on the CPU")
    device = "cpu" if args.dry else "cuda"
    report = {"mode": "dry run on the CPU, toy sizes" if args.dry else "full",
              "device": torch.cuda.get_device_name(0) if device == "cuda" else "CPU",
              "test_device": device, "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "load": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]}
    print("1/4 neural engine tests", flush=True)
    report["tests"] = neural_tests(device, args.dry)
    print("2/4 bench/lipsync.py", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report["lipsync"] = lipsync(args.dry, Path(tmp) / "lipsync.json")
    print("3/4 Piper", flush=True)
    report["piper"] = piper(device)
    print("4/4 VP8 encode", flush=True)
    report["encode_ms"] = vp8_encode_ms()
    text = markdown(report)
    out = args.out or ROOT / "bench" / "results" / f"gpu_check-{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
