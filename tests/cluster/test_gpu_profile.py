"""The gpu profile on the fake autoscaling cluster: the head has no GPU, so the model
replicas' fractional GPUs make the autoscaler start a GPU worker node (one logical GPU, as
Ray schedules a real one), where they pack as configured: ASR 0.125 + TTS 0.25 + two LipSync
replicas at 0.25 each, with the batching from the profile's user_config. Its session store is
the tests' Redis; its Wav2Lip-256 checkpoint random weights in the official layout."""
from __future__ import annotations

import json
import urllib.request

import pytest
import yaml

from serve_app.config import PROJECT_ROOT, load_profile

pytestmark = pytest.mark.cluster

HEAD = {"CPU": 4}
WORKERS = {"gpu": {"resources": {"CPU": 12, "GPU": 1, "session_slots": 8}, "min_workers": 0, "max_workers": 1}}


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory, redis_url):
    from ray import serve

    from serve_app.engines.lipsync.neural.wav2lip import Wav2Lip, save_official_checkpoint
    from serve_app.local_cluster import FakeAutoscalingCluster, deploy_config, free_port

    tmp = tmp_path_factory.mktemp("gpu")
    save_official_checkpoint(Wav2Lip("256"), tmp / "wav2lip256.pth")
    profile = yaml.safe_load((PROJECT_ROOT / "configs" / "gpu.yaml").read_text())
    profile["lipsync"]["options"]["checkpoint"] = str(tmp / "wav2lip256.pth")
    (tmp / "gpu.yaml").write_text(yaml.safe_dump(profile))
    config = yaml.safe_load((PROJECT_ROOT / "configs" / "serve_gpu.yaml").read_text())
    config["applications"][0]["args"]["profile"] = str(tmp / "gpu.yaml")
    config["proxy_location"] = "HeadOnly"  # every fake node is this machine: one port
    (tmp / "serve_gpu.yaml").write_text(yaml.safe_dump(config))

    cluster = FakeAutoscalingCluster(HEAD, WORKERS)
    cluster.start(env={"DH_REDIS_URL": redis_url})
    cluster.connect()
    port = free_port()
    deploy_config(tmp / "serve_gpu.yaml", port, timeout_s=300)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    cluster.shutdown()


def test_the_gpu_profile_starts_a_gpu_node_and_packs_its_replicas_there(gpu_cluster):
    import ray
    from ray import serve

    app = serve.status().applications["digital_human"]
    health = json.load(urllib.request.urlopen(f"{gpu_cluster}/api/health"))
    profile = load_profile("configs/gpu.yaml")
    wanted = sum(
        stage.deployment.ray_actor_options.get("num_gpus", 0) * stage.deployment.autoscaling_config["min_replicas"]
        for stage in (profile.asr, profile.llm, profile.tts, profile.lipsync)
    )
    assert health["profile"] == "gpu"
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2  # the head and the GPU node it started
    assert ray.cluster_resources().get("GPU", 0) == 1  # the worker's: the head has none
    # ASR 0.125 + TTS 0.25 + two LipSync replicas at 0.25 each; the LLM is remote.
    assert wanted == pytest.approx(0.875)
    assert ray.available_resources().get("GPU", 0) == pytest.approx(1 - wanted)
    for name in ("ASR", "LLM", "TTS", "LipSync", "Ingress", "SessionManager"):
        assert str(app.deployments[name].status).endswith("HEALTHY"), app.deployments
    assert app.deployments["LipSync"].replica_states == {"RUNNING": 2}
    # The Wav2Lip replicas run with the batching set in the profile's user_config.
    assert health["lipsync_cache"]["batching"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.01}
    # Sessions take the GPU node's session slots (the head has none): the warm pool is there.
    assert health["capacity"]["slots"] == 8
