"""Shared fixtures. Integration tests deploy serve_config.yaml exactly as `serve run` does,
on one local Ray cluster per test run, listening on a free loopback port."""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The avatar admin token, set before the Ray cluster starts so every replica inherits it.
os.environ.setdefault("DH_ADMIN_TOKEN", secrets.token_urlsafe(16))
# The session-creation key of tests/fixtures/strict.yaml (tests/integration/test_admission.py).
os.environ.setdefault("DH_TEST_CREATE_KEY", secrets.token_urlsafe(16))
# The realtime API key the fake Realtime server expects (tests/integration/test_realtime.py).
os.environ.setdefault("DH_TEST_REALTIME_KEY", secrets.token_urlsafe(16))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The session store's Redis (the `redis_url` fixture starts it): chosen before the Ray cluster
# starts, so every replica and session actor inherits the variable. With a password, as a
# cluster's would have.
REDIS_PORT, REDIS_PASSWORD = _free_port(), secrets.token_urlsafe(16)
os.environ.setdefault("DH_TEST_REDIS_URL", f"redis://:{REDIS_PASSWORD}@127.0.0.1:{REDIS_PORT}/0")


# The test run's own clients (aiortc peers, a browser) share the machine with the server, so
# the main app's admission by measured CPU would refuse the tests' sessions on a slow day.
# Admission has tests of its own (tests/unit/test_capacity.py, test_admission.py).
NO_ADMISSION = {"sessions": {"admission": {"enabled": False}}}


@pytest.fixture(scope="session")
def app_url() -> str:
    from serve_app.local_cluster import start_local, stop_local

    url = start_local(overrides=NO_ADMISSION)
    yield url
    stop_local()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real redis-server (Debian's, installed by scripts/test.sh) on a free loopback port,
    in memory only, for this test run."""
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed (scripts/test.sh installs Debian's redis-server)"
    folder = tempfile.mkdtemp(prefix="dh-redis-")
    process = subprocess.Popen(
        [server, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
         "--save", "", "--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:  # ready once it accepts connections
        try:
            socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not start in 30 s"
            time.sleep(0.1)
    yield os.environ["DH_TEST_REDIS_URL"]
    process.terminate()
    process.wait(10)
    shutil.rmtree(folder, ignore_errors=True)
