"""Run the app on a local Ray cluster from Python, the way `serve run CONFIG` does but without
blocking: the integration tests, the GPU-profile check and the benchmarks all start it so.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from serve_app.config import PROJECT_ROOT

DEFAULT_CONFIG = PROJECT_ROOT / "serve_config.yaml"


async def until(condition: Callable[[], Any], timeout: float = 30, every: float = 0.1) -> Any:
    """Poll `condition()` (sync or async) until it returns something truthy; return that.
    TimeoutError after `timeout` seconds."""
    async def poll():
        while True:
            value = condition()
            value = await value if asyncio.iscoroutine(value) else value
            if value:
                return value
            await asyncio.sleep(every)

    return await asyncio.wait_for(poll(), timeout)


def alive_nodes() -> list[str]:
    """The node ids of the cluster's live nodes."""
    import ray

    return [n["NodeID"] for n in ray.nodes() if n["Alive"]]


def session_actor(session_id: str):
    """The handle of a session's actor (ValueError when it has none)."""
    import ray

    from actors.session import actor_name
    from serve_app.config import SESSION_NAMESPACE

    return ray.get_actor(actor_name(session_id), namespace=SESSION_NAMESPACE)


async def session_node(session_id: str) -> str:
    """The id of the node a session's actor runs on."""
    return (await session_actor(session_id).describe.remote())["node_id"]


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
    config_path: Path = DEFAULT_CONFIG, num_cpus: int = 2, num_gpus: int = 0, overrides: dict | None = None,
    resources: dict | None = None,
) -> str:
    """ray.init a fresh local cluster (with custom `resources`, e.g. session slots), deploy the
    config on a free port (with the profile `overrides`, see deploy_config), return the base URL."""
    import ray

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init(
        num_cpus=num_cpus, num_gpus=num_gpus, resources=resources, include_dashboard=False, namespace="serve",
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


class FakeAutoscalingCluster:
    """Ray's fake multi-node autoscaler on this machine (the `fake_multinode` node provider,
    as `ray.cluster_utils.AutoscalingCluster` uses it): a head raylet, and worker "nodes" of
    the given types that the autoscaler starts as raylets of their own when demand needs them
    (their own CPUs, custom resources such as `session_slots`, logical GPUs) and removes
    once idle for `idle_timeout_s`. For the scale-out tests and benchmarks.

    `ray stop --force` ends it: it stops every Ray process of this machine, so never run it
    beside another cluster.

        cluster = FakeAutoscalingCluster({"CPU": 4, "session_slots": 1},
                                         {"sessions": {"resources": {"CPU": 2, "session_slots": 2},
                                                       "min_workers": 0, "max_workers": 2}})
        cluster.start(); ...; cluster.shutdown()
    """

    def __init__(self, head_resources: dict, worker_types: dict, idle_timeout_s: float = 10.0) -> None:
        self.head_resources = dict(head_resources)
        self.worker_types = {name: {"node_config": {}, **spec} for name, spec in worker_types.items()}
        self.idle_timeout_s = idle_timeout_s
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def _config(self) -> dict:
        head = {k: v for k, v in self.head_resources.items()}
        return {
            "cluster_name": "fake_multinode",
            "max_workers": sum(spec.get("max_workers", 0) for spec in self.worker_types.values()),
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": self.address},
            "available_node_types": {**self.worker_types,
                                     "ray.head.default": {"resources": head, "node_config": {}, "max_workers": 0}},
            "head_node_type": "ray.head.default",
            "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": self.idle_timeout_s / 60,
            "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [],
        }

    def start(self, env: dict | None = None) -> None:
        import json
        import subprocess
        import sys
        import tempfile

        ray_cli = str(Path(sys.executable).with_name("ray"))
        subprocess.run([ray_cli, "stop", "--force"], check=True, capture_output=True)
        config = Path(tempfile.mkdtemp(prefix="dh-fake-cluster-")) / "autoscaling.json"
        config.write_text(json.dumps(self._config()))
        head = dict(self.head_resources)
        cmd = [ray_cli, "start", "--head", f"--port={self.port}", f"--autoscaling-config={config}",
               f"--num-cpus={head.pop('CPU', 1)}", f"--num-gpus={head.pop('GPU', 0)}", "--include-dashboard=false",
               "--disable-usage-stats"]
        if head:
            cmd.append(f"--resources={json.dumps(head)}")
        # The autoscaler runs in the head's monitor process and starts worker raylets from it:
        # they inherit this environment (the `ray` CLI of this venv must be on PATH for them).
        # Token authentication (on by default for `ray start`) is off: every node is this machine.
        environment = {**os.environ, **(env or {}), "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
                       "RAY_AUTH_MODE": "disabled",
                       "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        subprocess.run(cmd, check=True, env=environment, capture_output=True)

    @staticmethod
    def kill_node(node_id: str) -> None:
        """As when a machine is lost: SIGKILL the node's raylet and every process it started
        (its workers, session actors among them: left alone, a worker outlives its raylet)."""
        import contextlib
        import signal

        def processes() -> dict[int, tuple[int, list[bytes]]]:  # pid -> (parent, argv)
            found = {}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue  # gone meanwhile
                found[int(pid)] = (parent, argv)
            return found

        flag = f"--node_id={node_id}".encode()
        raylet = next((pid for pid, (_, argv) in processes().items()
                       if argv[0].endswith(b"/raylet") and flag in argv), None)
        if raylet is None:
            raise ValueError(f"no raylet process for node {node_id}")
        os.kill(raylet, signal.SIGSTOP)  # it starts no worker while its family is listed
        parents = {pid: parent for pid, (parent, _) in processes().items()}
        doomed, grew = {raylet}, True
        while grew:  # the raylet's descendants
            more = {pid for pid, parent in parents.items() if parent in doomed} - doomed
            doomed |= more
            grew = bool(more)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def connect(self, namespace: str = "serve") -> None:
        import ray

        os.environ["RAY_AUTH_MODE"] = "disabled"  # as the cluster (start)
        ray.init(address=self.address, namespace=namespace, log_to_driver=False)

    def shutdown(self) -> None:
        import subprocess
        import sys

        import ray

        ray.shutdown()
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True)
