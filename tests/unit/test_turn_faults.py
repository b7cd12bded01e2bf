"""A turn whose stage fails or hangs ends with one error event that names the stage and says
nothing of the server's insides; the remote call is cancelled. Fake stage handles, no Ray."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest
import ray.exceptions

from actors.clock import MediaClock
from actors.errors import public_reason
from actors.speculation import Gate
from actors.turn import Turn, synthesized
from serve_app.events import Error
from tests.unit.stage_fakes import FakeHandle, frames_ok, speech, tts_ok

TIMEOUTS = {"tts": 0.3, "lipsync": 0.3}
RAY_INSIDES = ("pid=", "ip=", "Traceback", "actor_id", "127.0.0.1")


def tts_failing_after_first(error: BaseException):
    async def stream(text, voice, *_):
        yield speech()
        raise error
    return stream


async def tts_hanging(text, voice, *_):
    yield speech()
    await asyncio.Event().wait()
    yield speech()  # never


async def run_turn(tts, lipsync, sentences=("Hello there. How are you?",)):
    events: list = []
    clock = MediaClock(lambda n: np.zeros((8, 8, 3), np.uint8), max_frames_ahead=1000)

    async def source():
        for s in sentences:
            yield s

    turn = Turn("t1", synthesized(source(), tts, None, TIMEOUTS["tts"]), avatar_id="default", lipsync=lipsync,
                media=clock, chunk_frames=5, gate=Gate(events.append, opened=True), timeouts=TIMEOUTS)
    turn.start()
    await asyncio.wait_for(turn.wait(), 10)
    if turn.failed:  # a failed turn's playout is over at once: the rest never comes
        assert turn.playout.done.result() == "interrupted"
    errors = [(e.stage, e.message) for e in events if isinstance(e, Error)]
    assert all(e.turn_id == "t1" for e in events)
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


async def test_an_answer_landing_as_the_turn_is_cancelled_does_not_swallow_the_cancel():
    """Python 3.11's wait_for returns a result that lands with the cancellation; a barged-in
    turn must stop all the same."""
    from actors import deadline

    answer = asyncio.get_running_loop().create_future()
    caller = asyncio.create_task(deadline.call("asr", answer, 5))
    await asyncio.sleep(0)  # the caller waits for the answer
    answer.set_result("late transcript")
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
