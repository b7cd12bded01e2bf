"""Shared fixtures. Integration tests deploy serve_config.yaml exactly as `serve run` does,
on one local Ray cluster per test run, listening on a free loopback port."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def app_url() -> str:
    from serve_app.local_cluster import start_local, stop_local

    url = start_local()
    yield url
    stop_local()
