"""bench/gpu_check.sh --dry: the GPU check's every step, on the CPU at toy sizes, so the script
is known to work the day a GPU is lent (it cannot rot unseen)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from serve_app.config import PROJECT_ROOT


def test_the_dry_gpu_check_runs_every_step_and_writes_its_section(tmp_path):
    out = tmp_path / "gpu_check.md"
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--dry", "--out", str(out)], cwd=PROJECT_ROOT,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("## GPU check on CPU (dry run")
    assert re.search(r"Neural engine tests on `cpu`: \d+ tests collected .*\(exit 0\)", text), text
    assert re.search(r"Piper on `cpu`: RTF \d+\.\d+, first chunk \d+ ms", text), text
    assert re.search(r"VP8 encode of a 512x512 frame on one CPU thread: \d+\.\d+ ms", text), text
    for engine in ("wav2lip96", "musetalk"):  # a row each, with a measured batch-1 speed
        assert re.search(rf"\| {engine} \| \d+\.\d+ \|", text), text
    assert "did not finish" not in text


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="on a GPU machine the full check runs instead")
def test_without_a_gpu_the_full_check_says_what_to_do():
    done = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=PROJECT_ROOT, env={"PYTHON": sys.executable,
                          "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no CUDA device here" in done.stderr and "--dry" in done.stderr
