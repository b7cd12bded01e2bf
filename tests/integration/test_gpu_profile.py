"""The gpu profile deploys on a cluster with a (logical) GPU and packs fractional GPUs as set.

It runs in a subprocess so it gets its own Ray cluster, started with num_gpus=1: Ray then
schedules by the logical GPU exactly as it would on a real one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from serve_app.config import PROJECT_ROOT, load_profile

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, sys, urllib.request
from pathlib import Path
import ray, torch, yaml
from ray import serve
from serve_app.config import PROJECT_ROOT
from serve_app.engines.lipsync.neural.wav2lip import Wav2Lip, save_official_checkpoint
from serve_app.local_cluster import start_local, stop_local

# configs/gpu.yaml as shipped, with its Wav2Lip-256 checkpoint made of random weights.
tmp = Path(sys.argv[1])
save_official_checkpoint(Wav2Lip("256"), tmp / "wav2lip256.pth")
profile = yaml.safe_load((PROJECT_ROOT / "configs" / "gpu.yaml").read_text())
profile["lipsync"]["options"]["checkpoint"] = str(tmp / "wav2lip256.pth")
(tmp / "gpu.yaml").write_text(yaml.safe_dump(profile))
serve_config = yaml.safe_load((PROJECT_ROOT / "configs" / "serve_gpu.yaml").read_text())
serve_config["applications"][0]["args"]["profile"] = str(tmp / "gpu.yaml")
(tmp / "serve_gpu.yaml").write_text(yaml.safe_dump(serve_config))

url = start_local(tmp / "serve_gpu.yaml", num_cpus=12, num_gpus=1, resources={"session_slots": 8})
app = serve.status().applications["digital_human"]
health = json.load(urllib.request.urlopen(f"{url}/api/health"))
print("REPORT " + json.dumps({
    "gpu_total": ray.cluster_resources().get("GPU", 0),
    "gpu_free": ray.available_resources().get("GPU", 0),
    "deployments": {name: {"status": str(d.status), "replicas": d.replica_states}
                    for name, d in app.deployments.items()},
    "profile": health["profile"],
    "lipsync_cache": health["lipsync_cache"],
}, default=str), flush=True)
stop_local()
"""


def test_gpu_profile_schedules_fractional_gpus(tmp_path, redis_url):
    result = subprocess.run(  # the profile's session store is Redis: the tests' own server
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT, env={**os.environ, "DH_REDIS_URL": redis_url},
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
    # ASR 0.125 + TTS 0.25 + two LipSync replicas at 0.25 each; the LLM is remote.
    assert wanted == pytest.approx(0.875)
    assert report["gpu_free"] == pytest.approx(1 - wanted)
    for name in ("ASR", "LLM", "TTS", "LipSync", "Ingress", "SessionManager"):
        assert report["deployments"][name]["status"].endswith("HEALTHY"), report["deployments"]
    assert report["deployments"]["LipSync"]["replicas"] == {"RUNNING": 2}
    # The Wav2Lip replicas run with the batching set in the profile's user_config.
    assert report["lipsync_cache"]["batching"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.01}
