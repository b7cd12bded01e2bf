"""What the browser tests share: launching Debian's Chromium headless with a fresh profile
(through Playwright, never a browser download), and small helpers over the page's `window.dh`."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
TIMEOUT_MS = 30_000

# Inbound RTP stats of the current peer connection, by kind.
INBOUND_STATS_JS = """async () => {
  const pc = window.dh.pc;
  if (!pc) return null;
  const out = {};
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp') out[s.kind || s.mediaType] = {
      framesDecoded: s.framesDecoded, frameWidth: s.frameWidth, frameHeight: s.frameHeight,
      totalAudioEnergy: s.totalAudioEnergy, audioLevel: s.audioLevel,
      totalSamplesDuration: s.totalSamplesDuration, packetsReceived: s.packetsReceived,
    };
  });
  return out;
}"""

# A predicate over window.dh.events: `has_event(type, turn, extra)`.
HAS_EVENT_JS = """([type, turn, extra]) => window.dh.events.some((e) => e.type === type
  && (turn === null || String(e.turn_id) === String(turn))
  && Object.entries(extra).every(([k, v]) => e[k] === v))"""


async def sessions_active(app_url: str) -> int:
    async with httpx.AsyncClient(base_url=app_url, timeout=10) as http:
        resp = await http.get("/api/health")
        resp.raise_for_status()
        return resp.json()["sessions"]




@contextlib.asynccontextmanager
async def launch_page(profile_dir: Path, extra_args: list[str] = (), height: int = 900):
    # A missing browser fails the test (scripts/test.sh installs it); it is never skipped.
    assert Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM}: apt-get install chromium"
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS + list(extra_args),
            viewport={"width": 1280, "height": height},
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await context.close()


async def open_app(page, app_url: str) -> tuple[list[str], int]:
    """Open the page, recording uncaught page errors; returns (errors, sessions before)."""
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    sessions_before = await sessions_active(app_url)
    await page.goto(app_url + "/")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#avatar-select option')].some((o) => o.value === 'default')"
    )
    return page_errors, sessions_before


async def stop_and_check_clean(page, app_url: str, sessions_before: int, page_errors: list[str]) -> None:
    """Click Stop: the page goes idle, the server's session count returns to what it was, and
    neither the page nor its log reported an error."""
    await page.click("#stop")
    await page.wait_for_function("() => document.getElementById('conn-state').textContent === 'idle'")
    assert await page.evaluate("window.dh.pc") is None
    deadline = time.monotonic() + 20
    while (active := await sessions_active(app_url)) != sessions_before:
        assert time.monotonic() < deadline, f"sessions {active}, was {sessions_before} before the test"
        await asyncio.sleep(0.2)
    assert page_errors == []
    logged_errors = await page.locator("#log .log-error").all_text_contents()
    assert logged_errors == [], logged_errors


async def inbound(page) -> dict:
    stats = await page.evaluate(INBOUND_STATS_JS)
    assert stats and "video" in stats and "audio" in stats, stats
    return stats


async def wait_event(page, type_: str, turn=None, timeout_ms: int = TIMEOUT_MS, **extra) -> dict:
    await page.wait_for_function(HAS_EVENT_JS, arg=[type_, turn, extra], timeout=timeout_ms)
    return await page.evaluate(
        """([type, turn, extra]) => window.dh.events.find((e) => e.type === type
          && (turn === null || String(e.turn_id) === String(turn))
          && Object.entries(extra).every(([k, v]) => e[k] === v))""",
        [type_, turn, extra],
    )


async def wait_media_time(page, seconds: float) -> None:
    """Wait until the <video> has played `seconds` more of media."""
    t0 = await page.evaluate("document.getElementById('video').currentTime")
    await page.wait_for_function(
        "t0 => document.getElementById('video').currentTime >= t0", arg=t0 + seconds
    )
