"""The web client in a real browser: headless Debian Chromium driven by Playwright, against the
real app on the local Ray cluster (the session-scoped `app_url` fixture).

Start -> connected -> the <video> plays at ~25 fps -> Send speaks (audio energy rises) ->
Interrupt stops a long turn -> Stop ends the session on the server. A session whose actor
dies is resumed by the page on a new actor."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import ray

from serve_app.events import CHANNEL_LOST_S
from serve_app.local_cluster import session_actor

from tests.browser.support import (
    inbound,
    open_app,
    stop_and_check_clean,
    wait_event,
    wait_media_time,
)

pytestmark = pytest.mark.browser

SCREENSHOT = Path(os.environ.get("DH_BROWSER_SCREENSHOT", "/tmp/browser_speaking.png"))

# Every decoded video frame that is painted: dark pixels (the inside of an open mouth) in the
# mouth box, with the avatar state shown at that moment, into window.mouthSamples.
MOUTH_SAMPLER_JS = """([x0, y0, x1, y1]) => {
  const v = document.getElementById('video');
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  window.mouthSamples = [];
  const onFrame = (now, meta) => {
    if (!window.mouthSamples) return;
    if (canvas.width !== v.videoWidth) { canvas.width = v.videoWidth; canvas.height = v.videoHeight; }
    ctx.drawImage(v, 0, 0);
    const d = ctx.getImageData(x0, y0, x1 - x0, y1 - y0).data;
    let dark = 0;
    for (let i = 0; i < d.length; i += 4) if (0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2] < 90) dark++;
    window.mouthSamples.push({ t: meta.mediaTime, dark, state: window.dh.avatarState });
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
}"""
# Dark pixels in the browser's frames: 15-75 with the mouth closed (at rest, or between sounds),
# 200-860 for the open shapes.
OPEN = 130
CONNECTED_JS = ("() => document.getElementById('conn-state').textContent === 'connected'"
                " && window.dh.events.some((e) => e.type === 'ready')")


def mouth_box() -> list[int]:
    from serve_app.config import PROJECT_ROOT
    from serve_app.engines.lipsync.sprite import SpriteAvatar

    avatar = SpriteAvatar(PROJECT_ROOT / "avatars" / "default")
    xs0, ys0, xs1, ys1 = zip(*(avatar.mouth_box(i) for i in range(0, 250, 5)))
    return [max(0, min(xs0) - 4), max(0, min(ys0) - 4), max(xs1) + 4, max(ys1) + 4]


async def say(page, text: str) -> str:
    """Choose "Say verbatim", type `text` and press Enter; returns the turn id from the /say
    response. (Enter asks the character by default.)"""
    await page.click("#say")
    await page.fill("#text", text)
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/say")
    ) as info:
        await page.press("#text", "Enter")
    resp = await info.value
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["turn_id"])


async def test_web_client_start_speak_interrupt_stop(app_url, browser_page):
    page = browser_page
    # The avatar list comes from /api/avatars: "default" is selected and named Ava.
    page_errors, sessions_before = await open_app(page, app_url)
    options = await page.eval_on_selector_all(
        "#avatar-select option", "os => os.map((o) => [o.value, o.textContent])"
    )
    assert ["default", "Ava"] in options, options
    assert await page.input_value("#avatar-select") == "default"
    assert await page.text_content("#conn-state") == "idle"

    # Start: connected, the events channel delivers "ready".
    await page.click("#start")
    await page.wait_for_function(CONNECTED_JS)
    assert await page.evaluate("window.dh.sessionId")

    # The voice picker lists GET /api/voices with each voice's backend; picking one switches it.
    voices = await page.eval_on_selector_all("#voice-select option", "os => os.map((o) => [o.value, o.textContent])")
    assert ["joe", "joe (piper, en-US, default, fallback)"] in voices, voices
    await page.select_option("#voice-select", "joe")
    assert await page.text_content("#voice-meta") == "Backend: piper"
    await page.wait_for_function(
        "() => window.dh.events.some((e) => e.type === 'session' && e.voice === 'joe')")

    # The video plays: full-size frames, the clock advances, ~25 fps decoded.
    await page.wait_for_function(
        "() => { const v = document.getElementById('video');"
        " return v.videoWidth >= 384 && !v.paused && v.currentTime > 0; }"
    )
    assert await page.is_hidden("#placeholder")
    # Over 3 s of media: the first second of a run's first session meets the cluster still
    # warming up (model loads, the LLM reading its prompt), which a 1 s window took for a
    # low frame rate (15 frames in one CI run).
    frames0 = (await inbound(page))["video"]["framesDecoded"]
    await wait_media_time(page, 3.0)
    video = (await inbound(page))["video"]
    assert video["framesDecoded"] - frames0 >= 60, (frames0, video)  # 25 per second of media
    assert video["frameWidth"] >= 384, video

    # Say a sentence: speaking, then a complete (not interrupted) turn; the text shows.
    await page.evaluate(MOUTH_SAMPLER_JS, mouth_box())
    sentence = "Hello from the browser! I am speaking with a moving mouth."
    turn = await say(page, sentence)
    await wait_event(page, "state", turn, state="speaking")
    audio0 = (await inbound(page))["audio"]
    await wait_media_time(page, 0.5)
    # Screenshot (for people to look at) as soon as a painted frame shows the mouth open.
    await page.wait_for_function("open => window.mouthSamples.at(-1).dark > open", arg=OPEN)
    await page.screenshot(path=str(SCREENSHOT))
    assert await page.text_content("#avatar-state") == "speaking"
    end = await wait_event(page, "turn_end", turn, timeout_ms=60_000)
    assert end["interrupted"] is False, end
    audio1 = (await inbound(page))["audio"]
    assert await page.text_content("#assistant-text") == sentence
    await wait_event(page, "latency", turn)
    latency = await page.text_content("#latency")  # relative to the request: "tts N ms · first frame N ms"
    assert latency.startswith("tts ") and "first frame" in latency, latency
    # Speech reached the audio playout: energy grew (silence adds ~0).
    speech_energy = audio1["totalAudioEnergy"] - audio0["totalAudioEnergy"]
    speech_time = audio1["totalSamplesDuration"] - audio0["totalSamplesDuration"]
    assert speech_time >= 1.0, (audio0, audio1)
    # ...and then rests: a second of idle audio adds far less energy per second.
    await page.wait_for_function("() => document.getElementById('avatar-state').textContent === 'idle'")
    await wait_media_time(page, 0.5)
    idle0 = (await inbound(page))["audio"]
    rest_from = await page.evaluate("document.getElementById('video').currentTime")
    await wait_media_time(page, 1.0)
    idle1 = (await inbound(page))["audio"]
    idle_energy = idle1["totalAudioEnergy"] - idle0["totalAudioEnergy"]
    idle_time = idle1["totalSamplesDuration"] - idle0["totalSamplesDuration"]
    print(f"audio energy: speech {speech_energy:.5f} in {speech_time:.2f}s, idle {idle_energy:.7f} in {idle_time:.2f}s")
    assert speech_energy / speech_time > 1e-4, (audio0, audio1)
    assert idle_energy / max(idle_time, 1e-3) < 0.1 * speech_energy / speech_time, (idle0, idle1)
    # The mouth in the painted frames moves while speaking and rests afterwards.
    samples = await page.evaluate("() => { const s = window.mouthSamples; window.mouthSamples = null; return s; }")
    talking = [s["dark"] for s in samples if s["state"] == "speaking"]
    resting = [s["dark"] for s in samples if s["state"] == "idle" and s["t"] >= rest_from]
    print("mouth while speaking:", talking)
    print("mouth at rest:", resting)
    assert len(talking) >= 50, talking  # the sentence lasts ~3 s at 25 fps
    # ~1/3 of the frames in practice; "speaking" also covers a few frames still in the jitter buffer.
    assert sum(d > OPEN for d in talking) > 0.15 * len(talking), f"the mouth barely opened: {talking}"
    assert min(talking) < OPEN, talking  # and closed again between sounds
    assert len(resting) >= 15 and max(resting) < OPEN, resting

    # A long answer, interrupted while speaking.
    long_text = "This is a long answer that keeps going for quite a while, on and on. " * 4
    turn = await say(page, long_text.strip())
    await wait_event(page, "state", turn, state="speaking")
    await page.click("#interrupt")
    end = await wait_event(page, "turn_end", turn)
    assert end["interrupted"] is True, end
    await page.wait_for_function("() => document.getElementById('avatar-state').textContent === 'idle'")
    assert "interrupted" in await page.get_attribute("#assistant-text", "class")
    assert await page.evaluate("window.dh.events.filter((e) => e.type === 'error')") == []

    # Stop: idle in the page, and the server's session count is back where it was.
    await stop_and_check_clean(page, app_url, sessions_before, page_errors)



async def test_the_page_resumes_its_session_when_the_actor_dies(app_url, browser_page):
    """As when the actor's node is lost: the page's pings go unanswered, it offers again on
    the same session with its token, and the server resumes it on a new actor."""
    page = browser_page
    page_errors, sessions_before = await open_app(page, app_url)
    await page.click("#start")
    await page.wait_for_function(CONNECTED_JS)
    session_id = await page.evaluate("window.dh.sessionId")
    turn = await say(page, "Before the fall.")
    await wait_event(page, "turn_end", turn, timeout_ms=60_000)

    old = session_actor(session_id)
    await asyncio.to_thread(ray.kill, old, no_restart=True)
    await wait_event(page, "ready", resumed=True, timeout_ms=int(CHANNEL_LOST_S + 30) * 1000)
    await page.wait_for_function("() => document.getElementById('conn-state').textContent === 'connected'")
    assert await page.evaluate("window.dh.sessionId") == session_id
    assert session_actor(session_id)._actor_id != old._actor_id
    await wait_media_time(page, 1.0)  # the new actor's face plays

    turn = await say(page, "After the fall.")
    await wait_event(page, "turn_end", turn, timeout_ms=60_000)
    assert await page.text_content("#assistant-text") == "After the fall."
    ended = await page.evaluate(
        """() => { const ev = window.dh.events;
          const from = ev.findIndex((e) => e.type === 'ready' && e.resumed);
          return ev.slice(from).filter((e) => e.type === 'turn_end').map((e) => String(e.turn_id)); }""")
    assert ended == [turn]  # no second greeting from the new actor
    lines = await page.eval_on_selector_all("#transcript .msg-text", "ls => ls.map((l) => l.textContent)")
    assert "Before the fall." in lines and "After the fall." in lines, lines  # the transcript was kept
    await stop_and_check_clean(page, app_url, sessions_before, page_errors)
