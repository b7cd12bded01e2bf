"""The gpu profile deploys on a cluster with a (logical) GPU and packs fractional GPUs as set.

It runs in a subprocess so it gets its own Ray cluster, started with num_gpus=1: Ray then
schedules by the logical GPU exactly as it would on a real one.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serve_app.config import PROJECT_ROOT, load_profile

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, urllib.request
import ray
from ray import serve
from serve_app.config import PROJECT_ROOT
from serve_app.local_cluster import start_local, stop_local

url = start_local(PROJECT_ROOT / "configs" / "serve_gpu.yaml", num_cpus=12, num_gpus=1)
app = serve.status().applications["digital_human"]
health = json.load(urllib.request.urlopen(f"{url}/api/health"))
print("REPORT " + json.dumps({
    "gpu_total": ray.cluster_resources().get("GPU", 0),
    "gpu_free": ray.available_resources().get("GPU", 0),
    "deployments": {name: {"status": str(d.status), "replicas": d.replica_states}
                    for name, d in app.deployments.items()},
    "profile": health["profile"],
}, default=str), flush=True)
stop_local()
"""


def test_gpu_profile_schedules_fractional_gpus():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    profile = load_profile("configs/gpu.yaml")
    wanted = sum(
        stage.deployment.ray_actor_options.get("num_gpus", 0) * stage.deployment.autoscaling_config["min_replicas"]
        for stage in (profile.asr, profile.llm, profile.tts, profile.lipsync)
    )
    assert report["profile"] == "gpu"
    assert report["gpu_total"] == 1
    assert wanted == pytest.approx(0.875)  # ASR 0.125 + TTS 0.25 + LipSync 0.5; the LLM is remote
    assert report["gpu_free"] == pytest.approx(1 - wanted)
    for name in ("ASR", "LLM", "TTS", "LipSync", "Ingress", "SessionManager"):
        assert report["deployments"][name]["status"].endswith("HEALTHY"), report["deployments"]
