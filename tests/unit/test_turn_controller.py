"""The session core without Ray or aiortc: TurnController with fake stage handles, the real
MediaClock, and a screen the test advances frame by frame. Runs in milliseconds."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from actors.clock import MediaClock
from actors.conversation import Conversation
from actors.listener import MicListener
from actors.turn_controller import StageHandles, TurnController, TurnSettings
from serve_app.config import Character
from serve_app.engines.asr.base import Transcript
from serve_app.engines.vad import create_vad_engine
from serve_app.engines.tts.base import DEFAULT_STYLE
from serve_app.engines.vad.detector import UtteranceDetector
from serve_app.events import Error, TurnEnd
from tests.unit.stage_fakes import FakeHandle, frames_ok, speech, tts_ok

AVA = Character(id="ava", name="Ava", system_prompt="You are Ava.")
TIMEOUTS = {"asr": 2.0, "llm": 2.0, "tts": 2.0, "lipsync": 2.0}
QUESTION = np.full(16000, 0.1, np.float32)  # what the fake ASR hears as the question
WAIT_S = 5  # a bound on each wait, so a broken controller fails instead of hanging


class Stage:
    """A fake stage's behaviour: answers at once, or blocks at `reached` until cancelled."""

    def __init__(self, block: bool = False) -> None:
        self.block = block
        self.reached = asyncio.Event()


def make_stages(asr: Stage, llm: Stage, tts: Stage, answer=("Sure. ", "It is sunny.")):
    async def transcribe(audio):
        asr.reached.set()
        if asr.block:
            await asyncio.Event().wait()
        return Transcript("what is the weather")

    async def stream(messages, max_tokens, session):
        llm.reached.set()
        for i, token in enumerate(answer):
            yield token
            if i == 0 and llm.block:  # the first token out, then it hangs
                await asyncio.Event().wait()

    async def prefill(messages, max_tokens):
        return None

    async def synthesize(text, voice, *_):
        tts.reached.set()
        if tts.block:
            await asyncio.Event().wait()
        yield speech(0.3)

    return StageHandles(
        asr=FakeHandle("transcribe", transcribe, False),
        llm=FakeHandle("stream", stream, True).also("prefill", prefill, False),
        tts=FakeHandle("stream", synthesize, True),
        lipsync=FakeHandle("render", frames_ok, False),
    )


class Screen:
    """Shows the clock's frames when told to: what a transport's pacing would do."""

    def __init__(self, clock: MediaClock) -> None:
        self._clock = clock
        self._index = 0

    async def show(self, frames: int) -> None:
        for _ in range(frames):
            unit = self._clock.unit(self._index)
            self._clock.video_sent(self._index, unit)
            self._index += 1
            await asyncio.sleep(0)  # the turn's task runs between frames, as between packets

    async def until(self, condition) -> None:
        async def run():
            while not condition():
                await self.show(1)
        await asyncio.wait_for(run(), WAIT_S)


class Session:
    def __init__(self, asr=None, llm=None, tts=None, **stage_options) -> None:
        self.asr, self.llm, self.tts = asr or Stage(), llm or Stage(), tts or Stage()
        self.stages = make_stages(self.asr, self.llm, self.tts, **stage_options)
        self.events: list = []
        self.clock = MediaClock(lambda n: np.zeros((8, 8, 3), np.uint8), max_frames_ahead=1000)
        self.conversation = Conversation(AVA, max_turns=4, session="s1")
        self.core = TurnController(self.stages, self.clock, self.events.append, self.conversation,
                                   TurnSettings(chunk_frames=5, timeouts=TIMEOUTS), avatar_id="default", voice=None)
        self.screen = Screen(self.clock)

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def turn_ends(self) -> list[TurnEnd]:
        return [e for e in self.events if isinstance(e, TurnEnd)]

    async def play_out(self) -> None:
        await self.screen.until(lambda: not self.core.speaking)


async def reached(stage: Stage) -> None:
    await asyncio.wait_for(stage.reached.wait(), WAIT_S)


async def test_say_plays_out_and_ends_by_one_route():
    s = Session()
    turn_id = await s.core.say("Hello there.")
    await s.play_out()
    assert s.types() == ["state", "assistant_text", "state", "latency", "turn_end", "state"]
    assert [e.state for e in s.events if e.type == "state"] == ["thinking", "speaking", "idle"]
    assert s.turn_ends() == [TurnEnd(turn_id=turn_id, interrupted=False, t=s.turn_ends()[0].t)]
    latency = next(e for e in s.events if e.type == "latency")
    assert {"request", "tts_first_audio", "first_frame_sent"} <= set(latency.marks)
    assert s.stages.tts.called("stream") == [("Hello there.", None, DEFAULT_STYLE, False)]


async def test_ask_streams_the_llm_into_sentences_and_records_the_exchange():
    s = Session()
    await s.core.ask("how is the weather?")
    await s.play_out()
    assert [args[0] for args in s.stages.tts.called("stream")] == ["Sure.", "It is sunny."]
    deltas = [e.text for e in s.events if e.type == "assistant_text"]
    assert deltas == ["Sure. ", "It is sunny."]
    assert len(s.conversation) == 1 and s.turn_ends()[0].interrupted is False


async def test_a_confirmed_speculation_is_adopted_without_asking_twice():
    s = Session(tts=Stage(block=False))
    s.core.paused(QUESTION, ended_at=0.0)
    await reached(s.tts)  # ASR, LLM and TTS ran behind the closed gate
    assert s.events == [] and len(s.conversation) == 0  # nothing seen or remembered yet
    await s.core.utterance(QUESTION, ended_at=0.0, truncated=False)
    await s.play_out()
    assert len(s.stages.asr.called("transcribe")) == 1  # the pause's transcript was used
    assert s.core.speculations == {"started": 1, "confirmed": 1}
    types = s.types()
    assert types[:2] == ["state", "user_transcript"]  # the held events came out on adoption
    assert types.count("turn_end") == 1 and s.turn_ends()[0].interrupted is False
    assert len(s.conversation) == 1


async def test_talking_on_after_a_pause_drops_its_reply_unseen():
    s = Session(llm=Stage(block=True))
    s.core.paused(QUESTION, ended_at=0.0)
    await reached(s.llm)
    s.core.went_on()
    [stream] = s.stages.llm.responses_of("stream")
    await s.screen.until(lambda: stream.cancelled)  # the LLM stream was stopped on its replica
    assert s.events == [] and len(s.conversation) == 0
    assert s.core.speculations == {"started": 1, "confirmed": 0}
    s.llm.block = False
    await s.core.utterance(QUESTION, ended_at=0.0, truncated=False)  # the whole utterance, afresh
    await s.play_out()
    assert len(s.stages.asr.called("transcribe")) == 2 and len(s.conversation) == 1
    assert [e.interrupted for e in s.turn_ends()] == [False]  # the dropped reply never was a turn


@pytest.mark.parametrize("stage", ["asr", "llm", "tts", "playout"])
async def test_barge_in_cuts_the_turn_at_any_stage(stage):
    s = Session(**{stage: Stage(block=True)} if stage != "playout" else {})
    await s.core.utterance(QUESTION, ended_at=0.0, truncated=False)
    if stage == "playout":
        await s.screen.until(lambda: "latency" in s.types())  # its first frame is on screen
        assert s.clock.queued() > 0
    else:
        await reached(getattr(s, stage))
    await s.core.speech_started()
    assert s.types()[-4:] == ["turn_end", "state", "barge_in", "state"]
    assert s.turn_ends()[0].interrupted is True and [e.state for e in s.events[-3::2]] == ["idle", "listening"]
    assert not s.core.speaking and s.clock.queued() == 0  # nothing more of it is heard
    if stage != "playout":  # the blocked call was cancelled on its replica
        method = {"asr": "transcribe", "llm": "stream", "tts": "stream"}[stage]
        assert getattr(s.stages, stage).responses_of(method)[-1].cancelled
        getattr(s, stage).block = False
    # What was asked stays in the history unless the transcript never came.
    assert len(s.conversation) == (0 if stage == "asr" else 1)
    await s.core.say("Go on.")  # the session carries on
    await s.play_out()
    assert [e.interrupted for e in s.turn_ends()] == [True, False]


async def test_a_stage_failing_mid_turn_ends_it_interrupted_and_the_session_goes_on():
    async def tts_breaks(text, voice, *_):
        yield speech(0.4)
        raise ValueError("Piper voice file is damaged")

    s = Session()
    s.stages.tts = FakeHandle("stream", tts_breaks, True)
    s.core = TurnController(s.stages, s.clock, s.events.append, s.conversation,
                            TurnSettings(chunk_frames=5, timeouts=TIMEOUTS), avatar_id="default", voice=None)
    await s.core.say("Hello there.")
    await s.screen.until(lambda: s.turn_ends())
    [error] = [e for e in s.events if isinstance(e, Error)]
    assert error.stage == "tts" and "Piper voice file is damaged" in error.message
    assert s.turn_ends()[0].interrupted is True and s.clock.queued() == 0  # its frames dropped
    s.stages.tts = FakeHandle("stream", tts_ok, True)
    s.core = TurnController(s.stages, s.clock, s.events.append, s.conversation,
                            TurnSettings(chunk_frames=5, timeouts=TIMEOUTS), avatar_id="default", voice=None)
    await s.core.say("Still here.")
    await s.play_out()
    assert [e.interrupted for e in s.turn_ends()] == [True, False]


async def test_push_to_talk_barges_in_and_answers_what_was_held():
    s = Session()
    listener = MicListener(UtteranceDetector(create_vad_engine("energy")), s.core, max_utterance_s=10)
    listener.set_mode("push_to_talk")
    await s.core.say("A long story.")
    await s.screen.until(lambda: "latency" in s.types())
    await listener.push_to_talk(True)  # pressed while the avatar speaks
    assert s.types()[-3:] == ["state", "barge_in", "state"] and s.turn_ends()[0].interrupted
    for _ in range(25):  # half a second held
        await listener.push(np.full(320, 0.05, np.float32))
    assert await listener.push_to_talk(False)
    await s.play_out()
    [(audio,)] = s.stages.asr.called("transcribe")
    assert len(audio) == 25 * 320  # exactly what was heard while the button was down
    assert "user_transcript" in s.types() and [e.interrupted for e in s.turn_ends()] == [True, False]


async def test_requests_at_once_leave_one_current_turn_that_interrupt_ends():
    """say, ask, a spoken utterance and an uploaded file sent together while a turn plays:
    each waits for the turn before it to unwind, so when all have returned one turn is
    current, and one interrupt leaves nothing playing and nothing queued."""
    s = Session(tts=Stage(block=True))  # no turn can end by itself
    first = await s.core.say("A long story.")
    await reached(s.tts)
    ids = await asyncio.gather(
        s.core.say("One."), s.core.ask("two?"), s.core.say("Three."),
        s.core.utterance(QUESTION, ended_at=0.0, truncated=False), s.core.play(audio_of(speech(2.0))))
    assert s.core.speaking
    assert await s.core.interrupt() is True
    await s.screen.show(50)
    assert not s.core.speaking and s.clock.queued() == 0
    ends = s.turn_ends()
    assert len(ends) == 6 and all(e.interrupted for e in ends), ends  # every turn ended once
    assert {first, *(i for i in ids if i)} <= {e.turn_id for e in ends}
    assert s.types()[-2:] == ["turn_end", "state"]  # nothing started after the interrupt


async def test_a_greeting_never_starts_beside_a_current_turn():
    s = Session(tts=Stage(block=True))
    asked = await s.core.say("Hello.")
    assert await s.core.say("Greetings.", interrupt=False) is None
    await s.core.interrupt()
    assert [e.turn_id for e in s.turn_ends()] == [asked]


async def audio_of(chunk):
    yield chunk
