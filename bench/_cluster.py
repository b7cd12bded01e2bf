"""Start a local Ray cluster and deploy serve_config.yaml on it, the way `serve run` does.

A copy of the helper in tests/conftest.py, so the benchmarks do not depend on the test suite.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy_config(config_path: Path, port: int, timeout_s: float = 180) -> None:
    """What `serve run CONFIG` does, minus the blocking: start Serve and deploy the apps."""
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(config_path.read_text())
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump())
    client.deploy_apps(schema, _blocking=False)
    names = [app.name for app in schema.applications]
    deadline = time.monotonic() + timeout_s
    while True:
        apps = serve.status().applications
        states = {n: apps[n].status if n in apps else "NOT_STARTED" for n in names}
        if all(s == "RUNNING" for s in states.values()):
            return
        failed = {n: apps[n].message for n, s in states.items() if s == "DEPLOY_FAILED"}
        if failed:
            raise RuntimeError(f"deployment failed: {failed}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"apps not running after {timeout_s}s: {states}")
        time.sleep(0.5)


def start_local(config_path: Path = ROOT / "serve_config.yaml", num_cpus: int = 2) -> str:
    """ray.init a fresh local cluster, deploy the config on a free port, return the base URL."""
    import ray

    ray.init(num_cpus=num_cpus, num_gpus=0, include_dashboard=False, namespace="serve", log_to_driver=False)
    port = free_port()
    deploy_config(config_path, port)
    return f"http://127.0.0.1:{port}"


def stop_local() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
