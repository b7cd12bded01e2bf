"""The WebSocket demo page (web/ws.html) in headless Chromium: it connects over one
WebSocket, draws the JPEG face on a canvas while the reply's audio arrives, and Stop ends
the socket and the session."""
from __future__ import annotations

import asyncio

import pytest

from tests.browser.support import sessions_active

pytestmark = pytest.mark.browser


async def test_the_ws_page_talks_and_draws_the_face(browser_page, app_url):
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    before = await sessions_active(app_url)
    await page.goto(app_url + "/ws.html")
    await page.click("#ws-start")
    await page.wait_for_function("() => window.dhws.events.some((e) => e.type === 'ready')")
    welcome = await page.evaluate("window.dhws.welcome")
    assert welcome["face"] == "jpeg" and welcome["fps"] == 25
    await page.click("#ws-interrupt")
    await page.fill("#ws-text", "Hello from the socket page, can you see my face move?")
    await page.click("#ws-say")
    turn = await page.wait_for_function(
        """() => { const said = window.dhws.events.find((e) => e.type === 'assistant_text' && /socket page/.test(e.text));
                   return said && window.dhws.events.find((e) => e.type === 'turn_end' && e.turn_id === said.turn_id); }""")
    end = await turn.json_value()
    assert end["interrupted"] is False
    loud = await page.evaluate("window.dhws.loudFrames")
    sizes = await page.evaluate("window.dhws.jpegSizes")
    talking = [sizes[str(f)] for f in loud if str(f) in sizes]
    assert len(loud) > 25 and len(talking) > 20
    assert len(set(talking)) > 5  # the pictures change while the voice plays
    assert await page.evaluate("window.dhws.drawnFrames") > 50  # drawn on the canvas, not just received
    await page.click("#ws-stop")
    await page.wait_for_function("() => window.dhws.state === 'closed'")
    assert await page.evaluate("window.dhws.closeCode") == 1000
    assert errors == []

    async def back_to_before() -> None:  # Stop also deleted the session
        while await sessions_active(app_url) != before:
            await asyncio.sleep(0.2)  # polling the server, not timing the test

    await asyncio.wait_for(back_to_before(), 20)
