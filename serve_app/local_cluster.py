"""Run the app on a local Ray cluster from Python, the way `serve run CONFIG` does but without
blocking: the integration tests, the GPU-profile check and the benchmarks all start it so.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import yaml

from serve_app.config import PROJECT_ROOT

DEFAULT_CONFIG = PROJECT_ROOT / "serve_config.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy_config(config_path: Path, port: int, timeout_s: float = 180, overrides: dict | None = None) -> None:
    """Start Serve on 127.0.0.1:`port` and deploy the config's apps (each app's profile with
    `overrides` laid over it: build_app's args); return once all run."""
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(Path(config_path).read_text())
    config["http_options"] = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
    if overrides:
        for app in config["applications"]:
            app["args"] = {**app.get("args", {}), "overrides": overrides}
    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(http_options=schema.http_options.model_dump())
    client.deploy_apps(schema, _blocking=False)
    wait_running([app.name for app in schema.applications], timeout_s)


def run_app(app, name: str, route_prefix: str, timeout_s: float = 180) -> None:
    """Add one more application beside those deployed (serve.run, with a deadline)."""
    from ray.serve.api import _run

    _run(app, name=name, route_prefix=route_prefix, _blocking=False)
    wait_running([name], timeout_s)


def wait_running(names: list[str], timeout_s: float) -> None:
    """Return once every app is RUNNING; raise with their states (e.g. a replica that cannot
    be scheduled for lack of CPUs) rather than wait forever."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        apps = serve.status().applications
        states = {n: apps[n].status if n in apps else "NOT_STARTED" for n in names}
        if all(s == "RUNNING" for s in states.values()):
            return
        failed = {n: " ".join([apps[n].message] + [d.message for d in apps[n].deployments.values() if d.message])
                  for n, s in states.items() if s == "DEPLOY_FAILED"}
        if failed:
            raise RuntimeError(f"deployment failed: {failed}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"apps not running after {timeout_s}s: {states}")
        time.sleep(0.5)


def start_local(
    config_path: Path = DEFAULT_CONFIG, num_cpus: int = 2, num_gpus: int = 0, overrides: dict | None = None
) -> str:
    """ray.init a fresh local cluster, deploy the config on a free port (with the profile
    `overrides`, see deploy_config), return the base URL."""
    import ray

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init(
        num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, namespace="serve",
        log_to_driver=False,
    )
    port = free_port()
    deploy_config(config_path, port, overrides=overrides)
    return f"http://127.0.0.1:{port}"


def stop_local() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
