"""The operations files stay true to the app: the KubeRay RayService deploys exactly
configs/serve_gpu.yaml with the autoscaler on, and the Grafana dashboard is well formed (its
metrics are checked against a live app in tests/integration/test_metrics.py)."""
from __future__ import annotations

import json
import re

import ray
import yaml

from serve_app.config import PROJECT_ROOT

KUBERAY = PROJECT_ROOT / "configs" / "kuberay" / "rayservice.yaml"
DASHBOARD = PROJECT_ROOT / "configs" / "grafana" / "digital-human.json"


def dashboard_metrics() -> set[str]:
    """Every metric name the dashboard's queries read."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"\bray_[a-z_]+", e)}


def test_the_rayservice_deploys_serve_gpu_yaml_with_the_autoscaler_on():
    manifest = yaml.safe_load(KUBERAY.read_text())
    assert manifest["kind"] == "RayService"
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert serve_config == yaml.safe_load((PROJECT_ROOT / "configs" / "serve_gpu.yaml").read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__ and cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == "1"
    images = {c["image"] for spec in [cluster["headGroupSpec"], *groups.values()]
              for c in spec["template"]["spec"]["containers"]}
    assert len(images) == 1  # one image everywhere: replicas run the same code


def test_the_ray_dashboard_is_reachable_by_the_kuberay_operator_alone():
    """It accepts jobs (runs code). Only port 8000 is open to everyone; 8265 and the agent's
    52365 to the operator's namespace; Ray's pods to each other."""
    policy = yaml.safe_load((KUBERAY.parent / "networkpolicy.yaml").read_text())
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    open_to_all = [r for r in rules if "from" not in r]
    assert [p["port"] for r in open_to_all for p in r["ports"]] == [8000]
    dashboard = [r for r in rules if any(p["port"] == 8265 for p in r.get("ports", []))]
    assert len(dashboard) == 1 and all("namespaceSelector" in peer for peer in dashboard[0]["from"])
    ray_pods = policy["spec"]["podSelector"]["matchLabels"]
    peers = [r for r in rules if "ports" not in r]
    assert [peer["podSelector"]["matchLabels"] for r in peers for peer in r["from"]] == [ray_pods]


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    [variable] = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
    assert {"ray_digital_human_sessions", "ray_digital_human_video_frames_total",
            "ray_digital_human_turn_latency_ms", "ray_digital_human_speculative_replies_total",
            "ray_serve_deployment_replica_healthy"} == dashboard_metrics()


def test_every_pod_gets_the_session_store_url_the_gpu_profile_names():
    """Session actors and replicas run on any pod: each needs the Redis URL's variable."""
    from serve_app.config import load_profile

    store = load_profile("configs/gpu.yaml").store
    assert store.backend == "redis"
    manifest = yaml.safe_load((PROJECT_ROOT / "configs" / "kuberay" / "rayservice.yaml").read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert store.url_env in env, container["name"]
            assert "secretKeyRef" in env[store.url_env]["valueFrom"]  # from a Secret, not the manifest


def test_the_cpu_pods_offer_the_session_slots_the_gpu_profile_reserves():
    from serve_app.config import load_profile

    slot = load_profile("configs/gpu.yaml").sessions.slot_resource
    manifest = yaml.safe_load((PROJECT_ROOT / "configs" / "kuberay" / "rayservice.yaml").read_text())
    groups = {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    # KubeRay's form: a JSON object, itself quoted.
    offered = json.loads(json.loads(groups["cpu"]["rayStartParams"]["resources"]))
    assert slot and offered[slot] >= 1
    # The capacity the profile reports as the most the autoscaler can reach is the manifest's.
    assert load_profile("configs/gpu.yaml").sessions.max_slots == groups["cpu"]["maxReplicas"] * offered[slot]
