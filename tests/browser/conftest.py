"""Fixtures for the browser tests."""
from __future__ import annotations

import pytest

from tests.browser.support import launch_page


@pytest.fixture
async def browser_page(tmp_path):
    """Chromium with no microphone (no fake-media flags)."""
    async with launch_page(tmp_path / "profile") as page:
        yield page
