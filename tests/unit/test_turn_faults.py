"""A turn whose stage fails or hangs ends with one error event that names the stage and says
nothing of the server's insides; the remote call is cancelled. Fake stage handles, no Ray."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import ray.exceptions

from actors.errors import public_reason
from actors.media import MediaClock
from actors.speculation import Gate
from actors.turn import Turn
from serve_app.engines.tts.base import AudioChunk

TIMEOUTS = {"tts": 0.3, "lipsync": 0.3}
RAY_INSIDES = ("pid=", "ip=", "Traceback", "actor_id", "127.0.0.1")


class FakeStream:
    """What `handle.options(stream=True).method.remote(...)` returns: async-iterable, cancellable."""

    def __init__(self, items) -> None:
        self._items = items
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self._items.__anext__()
        return item

    def cancel(self) -> None:
        self.cancelled = True


class FakeResponse:
    def __init__(self, coro) -> None:
        self._coro = coro
        self.cancelled = False

    def __await__(self):
        return self._coro.__await__()

    def cancel(self) -> None:
        self.cancelled = True


class FakeHandle:
    """`.options(...).<method>.remote(...)` calls `behaviour(*args)`; records the responses."""

    def __init__(self, method: str, behaviour, streaming: bool) -> None:
        self._method, self._behaviour, self._streaming = method, behaviour, streaming
        self.responses: list = []

    def options(self, **_):
        return self

    def __getattr__(self, name):
        if name != self._method:
            raise AttributeError(name)
        return self

    def remote(self, *args):
        result = self._behaviour(*args)
        response = FakeStream(result) if self._streaming else FakeResponse(result)
        self.responses.append(response)
        return response


def speech(seconds: float = 0.4) -> AudioChunk:
    t = np.arange(int(22050 * seconds)) / 22050
    return AudioChunk((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), 22050)


async def tts_ok(text, voice):
    yield speech()


def tts_failing_after_first(error: BaseException):
    async def stream(text, voice):
        yield speech()
        raise error
    return stream


async def tts_hanging(text, voice):
    yield speech()
    await asyncio.Event().wait()
    yield speech()  # never


async def frames_ok(chunk):
    return [np.zeros((8, 8, 3), np.uint8)] * chunk_len(chunk)


def chunk_len(chunk) -> int:
    return len(chunk.visemes)


async def run_turn(tts, lipsync, sentences=("Hello there. How are you?",)):
    errors: list[tuple[str, str]] = []
    clock = MediaClock(lambda n: np.zeros((8, 8, 3), np.uint8), max_frames_ahead=1000)

    async def source():
        for s in sentences:
            yield s

    turn = Turn("t1", source(), voice=None, avatar_id="default", tts=tts, lipsync=lipsync, clock=clock,
                chunk_frames=5, on_error=lambda stage, message: errors.append((stage, message)),
                gate=Gate(lambda e: None, opened=True), timeouts=TIMEOUTS)
    turn.start()
    await asyncio.wait_for(turn.wait(), 10)
    return turn, errors


async def test_a_healthy_turn_has_no_error():
    turn, errors = await run_turn(FakeHandle("stream", tts_ok, True), FakeHandle("render", frames_ok, False))
    assert not turn.failed and not errors and turn.frames_queued > 0


@pytest.mark.parametrize("error, reason", [
    (ray.exceptions.ActorDiedError(), "being restarted"),
    (ValueError("Unknown Piper voice 'x'"), "Unknown Piper voice 'x'"),
])
async def test_tts_failing_mid_reply_fails_the_turn_with_a_clean_message(error, reason):
    tts = FakeHandle("stream", tts_failing_after_first(error), True)
    turn, errors = await run_turn(tts, FakeHandle("render", frames_ok, False))
    assert turn.failed and turn.frames_queued > 0  # it had started speaking
    [(stage, message)] = errors
    assert stage == "tts" and message.startswith("speech synthesis failed:") and reason in message
    assert not any(word in message for word in RAY_INSIDES)
    assert all(r.cancelled for r in tts.responses)


async def test_a_hung_tts_stream_times_out():
    tts = FakeHandle("stream", tts_hanging, True)
    turn, errors = await run_turn(tts, FakeHandle("render", frames_ok, False))
    assert turn.failed
    assert errors == [("tts", "speech synthesis failed: no answer within 0.3 s")]
    assert tts.responses[-1].cancelled  # the replica is told to stop


async def test_lipsync_dying_or_hanging_fails_the_turn():
    async def died(chunk):
        raise ray.exceptions.RayActorError()

    async def hangs(chunk):
        await asyncio.Event().wait()

    for render, reason in ((died, "being restarted"), (hangs, "no answer within 0.3 s")):
        lipsync = FakeHandle("render", render, False)
        turn, errors = await run_turn(FakeHandle("stream", tts_ok, True), lipsync)
        [(stage, message)] = errors
        assert turn.failed and stage == "lipsync" and reason in message, message
        assert lipsync.responses[0].cancelled


def test_public_reason_hides_ray_internals():
    wrapped = ray.exceptions.RayTaskError("render", "Traceback ... pid=123, ip=10.0.0.5", ValueError("x"))
    for exc in (ray.exceptions.ActorDiedError(), wrapped, ray.exceptions.GetTimeoutError("pid=1")):
        text = public_reason(exc)
        assert text and not any(word in text for word in RAY_INSIDES + ("10.0.0.5",)), text
