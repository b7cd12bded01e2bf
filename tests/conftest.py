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


@pytest.fixture(scope="session")
def app_url() -> str:
    from serve_app.local_cluster import start_local, stop_local

    url = start_local()
    yield url
    stop_local()
