"""Fixtures shared by the integration tests (the cluster itself: tests/conftest.py)."""
from __future__ import annotations

import httpx
import pytest

from serve_app.client import AvatarSession


@pytest.fixture
async def http(app_url):
    async with httpx.AsyncClient(base_url=app_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
async def bystander(app_url):
    """A connected session that must keep streaming through everything a test module does."""
    session = await AvatarSession(app_url).start()
    await session.interrupt()
    yield session
    await session.close()
