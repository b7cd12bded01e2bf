"""A spoken conversation in a real browser: headless Debian Chromium (driven by Playwright) with
a fake microphone that plays a Piper-spoken question, against the real app on the local Ray
cluster (the session-scoped `app_url` fixture).

Start -> the mic is on (sendrecv, hands-free) and its level meter moves -> the server hears
"What is the capital of France?" -> the transcript shows it as the user's line, then the
streamed answer as the assistant's line -> the avatar speaks it (audio energy rises) -> latency
relative to the end of speech -> push-to-talk mode via the Space bar -> Stop ends the session."""
from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.browser.support import (
    TIMEOUT_MS,
    inbound,
    launch_page,
    open_app,
    stop_and_check_clean,
    wait_event,
    wait_media_time,
)

pytestmark = pytest.mark.browser

SCREENSHOT = Path("/tmp/browser_voice.png")
QUESTION = "What is the capital of France?"
WAV_RATE = 48_000
LEAD_S = 5.0    # the fake mic starts playing at getUserMedia (the Start click): time to connect
TAIL_S = 20.0   # silence after the question, in case the file loops anyway (see %noloop)
VOICE_TIMEOUT_MS = 90_000  # VAD -> ASR -> LLM -> TTS on two CPU cores


async def write_question_wav(path: Path) -> float:
    """LEAD_S of silence, the question spoken by Piper, TAIL_S of silence: 48 kHz mono int16.
    Returns the question's duration in seconds."""
    from serve_app.engines.audio import StreamResampler
    from serve_app.engines.tts.piper_tts import PiperTTS

    resampler, parts = None, []
    async for chunk in PiperTTS().stream(QUESTION):
        resampler = resampler or StreamResampler(chunk.sample_rate, WAV_RATE)
        parts.append(resampler.push(chunk.samples))
    parts.append(resampler.flush())
    speech = np.concatenate(parts) * 0.8
    audio = np.concatenate([
        np.zeros(int(LEAD_S * WAV_RATE), np.float32),
        speech,
        np.zeros(int(TAIL_S * WAV_RATE), np.float32),
    ])
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE)
        out.writeframes(pcm.tobytes())
    return len(speech) / WAV_RATE


@pytest.fixture
async def voice_page(tmp_path):
    """Chromium with a fake microphone playing the question once (`%noloop`), permission granted."""
    wav = tmp_path / "question.wav"
    seconds = await write_question_wav(wav)
    assert 1.0 < seconds < 5.0, seconds
    fake_mic = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]
    async with launch_page(tmp_path / "profile", fake_mic, height=1000) as page:
        yield page


async def wait_new_event(page, type_: str, action, timeout_ms: int = TIMEOUT_MS, **extra) -> None:
    """Run `action` and wait for an event of `type_` (with `extra` fields) that came after it."""
    count_js = """([type, extra]) => window.dh.events.filter((e) => e.type === type
      && Object.entries(extra).every(([k, v]) => e[k] === v)).length"""
    before = await page.evaluate(count_js, [type_, extra])
    await action()
    await page.wait_for_function(
        f"([type, extra, n]) => ({count_js})([type, extra]) > n", arg=[type_, extra, before], timeout=timeout_ms
    )


# The transcript's lines, as the page shows them.
TRANSCRIPT_JS = """() => [...document.querySelectorAll('#transcript > li')].map((li) => ({
  role: li.classList.contains('user') ? 'user' : (li.classList.contains('assistant') ? 'assistant' : '?'),
  turn: li.dataset.turn || null,
  text: li.querySelector('.msg-text').textContent,
  interrupted: li.classList.contains('interrupted'),
}))"""


async def test_spoken_question_in_the_browser(app_url, voice_page):
    page = voice_page
    page_errors, sessions_before = await open_app(page, app_url)
    # Before Start: hands-free by default, Ask is what Enter does, the talk button is hidden.
    assert await page.input_value("#mic-mode") == "hands_free"
    assert await page.evaluate("window.dh.micMode") == "hands_free"
    assert await page.get_attribute("#ask", "aria-checked") == "true"
    assert await page.text_content("#send") == "Ask"
    assert await page.is_hidden("#ptt")

    # Start: the fake microphone is granted and sent (sendrecv); the server confirms the mode.
    t_start = time.monotonic()
    await page.click("#start")
    await page.wait_for_function(
        "() => document.getElementById('conn-state').textContent === 'connected'"
        " && window.dh.events.some((e) => e.type === 'ready')"
    )
    connect_s = time.monotonic() - t_start
    print(f"connected {connect_s:.1f} s after Start (the question starts at {LEAD_S} s)")
    # Mic audio from before the media connects is lost: the question must start after that.
    assert connect_s < LEAD_S - 0.5, f"connecting took {connect_s:.1f} s: the question would be cut"
    assert await page.evaluate("window.dh.micEnabled") is True
    directions = await page.evaluate(
        "window.dh.pc.getTransceivers().map((t) => [t.receiver.track.kind, t.currentDirection])"
    )
    assert ["audio", "sendrecv"] in directions, directions
    assert ["video", "recvonly"] in directions, directions
    await wait_event(page, "mic_mode", mode="hands_free")
    assert await page.is_enabled("#mic-mute")
    assert await page.is_hidden("#notice")  # no "microphone off" notice

    # The question plays: the local level meter moves (the user sees they are heard)...
    await page.wait_for_function("() => window.dh.micLevel > 0.3", timeout=LEAD_S * 1000 + 15_000)
    # ...the server's VAD hears it ("listening"), and the transcript shows it as the user's line.
    await page.wait_for_function(
        "() => window.dh.events.some((e) => e.type === 'state' && e.state === 'listening')"
    )
    await page.wait_for_function(
        """() => [...document.querySelectorAll('#transcript li.user')].some((li) => {
          const t = li.textContent.toLowerCase(); return t.includes('capital') && t.includes('france'); })""",
        timeout=VOICE_TIMEOUT_MS,
    )
    heard = await wait_event(page, "user_transcript")
    turn = str(heard["turn_id"])
    assert "capital" in heard["text"].lower() and "france" in heard["text"].lower(), heard

    # The answer streams in as the assistant's line for that turn; the avatar speaks it.
    await page.wait_for_function(
        """(turn) => [...document.querySelectorAll('#transcript li.assistant')]
          .some((li) => li.dataset.turn === turn && li.querySelector('.msg-text').textContent.trim().length > 0)""",
        arg=turn,
        timeout=VOICE_TIMEOUT_MS,
    )
    await wait_event(page, "state", turn, timeout_ms=VOICE_TIMEOUT_MS, state="speaking")
    audio0 = (await inbound(page))["audio"]
    assert await page.get_attribute("#voice-state", "data-state") == "speaking"
    assert await page.text_content("#voice-state-label") == "Speaking"
    await wait_media_time(page, 1.0)
    audio1 = (await inbound(page))["audio"]
    await page.screenshot(path=str(SCREENSHOT))
    energy = audio1["totalAudioEnergy"] - audio0["totalAudioEnergy"]
    duration = audio1["totalSamplesDuration"] - audio0["totalSamplesDuration"]
    print(f"answer audio: energy {energy:.5f} in {duration:.2f} s")
    assert duration >= 0.8 and energy / duration > 1e-4, (audio0, audio1)

    # The turn completes; the latency line is relative to the end of speech.
    end = await wait_event(page, "turn_end", turn, timeout_ms=VOICE_TIMEOUT_MS)
    latency_event = await wait_event(page, "latency", turn)
    assert "speech_end" in latency_event["marks"], latency_event
    latency = await page.text_content("#latency")
    print("latency:", latency)
    # In time order; the VAD's confirmation ("vad end") falls wherever it came.
    parts = [p.rsplit(" ", 2)[0] for p in latency.split(" · ")]
    assert [p for p in parts if p != "vad end"] == ["asr", "llm", "tts", "first frame"], latency
    assert "vad end" in parts, latency
    lines = await page.evaluate(TRANSCRIPT_JS)
    print("transcript:", lines)
    deltas = "".join(
        e["text"] for e in await page.evaluate("window.dh.events")
        if e["type"] == "assistant_text" and str(e.get("turn_id")) == turn
    )
    answer = next(line for line in lines if line["role"] == "assistant" and line["turn"] == turn)
    assert answer["text"] == deltas.strip(), (answer, deltas)  # deltas appended raw
    assert answer["interrupted"] is end["interrupted"], (answer, end)
    users = [line for line in lines if line["role"] == "user"]
    assert len(users) == 1 and users[0]["turn"] == turn, users  # the question was heard once
    assert lines.index(users[0]) < lines.index(answer), lines
    # A greeting the question talked over is marked interrupted (barge-in), if that happened.
    if await page.evaluate("window.dh.events.some((e) => e.type === 'barge_in')"):
        assert any(line["interrupted"] for line in lines if line["role"] == "assistant" and line["turn"] != turn), lines
    await page.wait_for_function("() => document.getElementById('voice-state').dataset.state === 'idle'")
    errors = await page.evaluate("window.dh.events.filter((e) => e.type === 'error')")
    assert errors == [], errors

    # Push-to-talk: the mode goes to the server; holding the big button (mouse) or the Space bar
    # (focus outside the text box) is heard by the server as the start of an utterance.
    await wait_new_event(page, "mic_mode", lambda: page.select_option("#mic-mode", "push_to_talk"), mode="push_to_talk")
    assert await page.evaluate("window.dh.micMode") == "push_to_talk"
    assert await page.is_visible("#ptt") and await page.is_enabled("#ptt")
    await page.hover("#ptt")
    await wait_new_event(page, "state", lambda: page.mouse.down(), state="listening")
    assert await page.evaluate("window.dh.pttDown") is True
    assert await page.text_content("#ptt-label") == "Listening… release to send"
    # Back to hands-free while still holding: the held (silent) utterance is dropped, not sent.
    await wait_new_event(page, "mic_mode", lambda: page.select_option("#mic-mode", "hands_free"), mode="hands_free")
    await page.mouse.up()
    assert await page.evaluate("window.dh.pttDown") is False
    # The same with the Space bar.
    await wait_new_event(page, "mic_mode", lambda: page.select_option("#mic-mode", "push_to_talk"), mode="push_to_talk")
    await page.focus("#transcript")
    await wait_new_event(page, "state", lambda: page.keyboard.down("Space"), state="listening")
    assert await page.evaluate("window.dh.pttDown") is True
    assert await page.get_attribute("#ptt", "aria-pressed") == "true"
    assert await page.get_attribute("#voice-state", "data-state") == "listening"
    await page.screenshot(path=str(SCREENSHOT.with_name("browser_voice_ptt.png")))
    await wait_new_event(page, "mic_mode", lambda: page.select_option("#mic-mode", "hands_free"), mode="hands_free")
    await page.keyboard.up("Space")
    assert await page.evaluate("window.dh.pttDown") is False
    assert await page.is_hidden("#ptt")
    assert await page.get_attribute("#voice-state", "data-state") == "idle"
    assert await page.evaluate("window.dh.events.filter((e) => e.type === 'user_transcript').length") == 1

    # Stop: idle in the page, and the server's session count is back where it was.
    await stop_and_check_clean(page, app_url, sessions_before, page_errors)
    assert await page.evaluate("window.dh.micEnabled") is False


async def test_without_a_microphone_the_page_receives_only(app_url, browser_page):
    """No microphone permission (headless Chromium without the fake-media flags): the session
    still starts, receive only, with a visible notice; typing still works."""
    page = browser_page
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    await page.goto(app_url + "/")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#avatar-select option')].some((o) => o.value === 'default')"
    )
    await page.click("#start")
    await page.wait_for_function(
        "() => document.getElementById('conn-state').textContent === 'connected'"
        " && window.dh.events.some((e) => e.type === 'ready')"
    )
    assert await page.evaluate("window.dh.micEnabled") is False
    reason = await page.evaluate("window.dh.micError")
    print("no microphone:", reason)
    assert reason, "no reason given for the missing microphone"
    directions = await page.evaluate(
        "window.dh.pc.getTransceivers().map((t) => [t.receiver.track.kind, t.currentDirection])"
    )
    assert ["audio", "recvonly"] in directions, directions
    assert await page.is_visible("#notice")
    notice = await page.text_content("#notice-text")
    assert notice.startswith("Microphone off") and reason in notice, notice
    assert "Microphone off" in await page.text_content("#mic-status")
    assert await page.is_disabled("#mic-mute")
    # Typing asks the character: the typed line shows as the user's, the answer follows.
    await page.fill("#text", "Hello there!")
    async with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/ask")) as info:
        await page.press("#text", "Enter")
    resp = await info.value
    assert resp.status == 202, await resp.text()
    turn = str((await resp.json())["turn_id"])
    await page.wait_for_function(
        """(turn) => document.querySelector(`#transcript li.user[data-turn="${turn}"]`)
          && [...document.querySelectorAll('#transcript li.assistant')].some((li) => li.dataset.turn === turn
               && li.querySelector('.msg-text').textContent.trim())""",
        arg=turn,
        timeout=VOICE_TIMEOUT_MS,
    )
    assert await page.text_content(f'#transcript li.user[data-turn="{turn}"] .msg-text') == "Hello there!"
    await page.click("#stop")
    await page.wait_for_function("() => document.getElementById('conn-state').textContent === 'idle'")
    assert page_errors == []
