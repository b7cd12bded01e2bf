"""Shared fixtures. Integration tests deploy serve_config.yaml exactly as `serve run` does,
on one local Ray cluster per test run, listening on a free loopback port."""
from __future__ import annotations

import os
import secrets

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The avatar admin token, set before the Ray cluster starts so every replica inherits it.
os.environ.setdefault("DH_ADMIN_TOKEN", secrets.token_urlsafe(16))
# The session-creation key of tests/fixtures/strict.yaml (tests/integration/test_admission.py).
os.environ.setdefault("DH_TEST_CREATE_KEY", secrets.token_urlsafe(16))
# The realtime API key the fake Realtime server expects (tests/integration/test_realtime.py).
os.environ.setdefault("DH_TEST_REALTIME_KEY", secrets.token_urlsafe(16))


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
