"""The session core: which turn is current, which is speculative, and how each one ends.

No Ray and no aiortc here: the stages are handles (Serve's, or fakes in tests), media goes
to a `MediaOut`, events to an `emit` callable, and the mic arrives through the
`ListenerHooks` this class implements. Every transport (WebRTC, WebSocket) drives the same
controller, so speculation, barge-in and failure handling behave the same on each.

A turn ends by one route: its playout (`Turn.playout.done`, resolved by the media output or
by the turn itself) is awaited in `_see_through`, which alone emits `turn_end`.

One turn is current, however many requests arrive at once: every change of the current turn
(cut it, start the next) runs under one lock, so a request that waits for the previous turn
to unwind cannot start a turn beside another request's.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from actors.clock import MediaOut
from actors.conversation import Conversation, reply
from actors.speculation import Gate
from actors.turn import Marks, Turn, single, synthesized
from serve_app.engines.tts.base import DEFAULT_STYLE, AudioChunk, VoiceStyle
from serve_app.events import (
    AssistantText, BargeIn, Error, Event, Latency, State, TurnEnd, UtteranceTruncated,
)


@dataclass
class StageHandles:
    """Handles to the model deployments a session calls (Serve's, or fakes in tests)."""

    tts: Any
    lipsync: Any
    asr: Any
    llm: Any


@dataclass
class TurnSettings:
    chunk_frames: int  # frames per lip-sync call
    timeouts: Mapping[str, float]  # seconds per stage call (StageSettings.timeout_s)
    max_tokens: int | None = None
    max_utterance_s: float = 30.0
    audio_context: tuple[int, int] = (0, 0)  # the lip-sync engine's (context, look-ahead) frames
    tts_fallback: bool = False  # a failed voice hands the reply to the TTS fallback voice


class TurnMetrics(Protocol):
    def speculation(self, outcome: str) -> None: ...
    def marks(self, values: Mapping[str, float]) -> None: ...


class _NoMetrics:
    def speculation(self, outcome: str) -> None:
        pass

    def marks(self, values: Mapping[str, float]) -> None:
        pass


def new_turn_id() -> str:
    return uuid.uuid4().hex[:12]


SentenceSource = Callable[[str, Marks, Gate], AsyncIterator[str]]


@dataclass
class _Current:
    turn: Turn
    ending: asyncio.Task = field(repr=False)


class TurnController:
    def __init__(
        self,
        stages: StageHandles,
        media: MediaOut,
        emit: Callable[[Event], None],
        conversation: Conversation,
        settings: TurnSettings,
        *,
        avatar_id: str,
        voice: str | None,
        style: VoiceStyle = DEFAULT_STYLE,
        metrics: TurnMetrics | None = None,
    ) -> None:
        self._stages = stages
        self._media = media
        self._emit = emit
        self._conversation = conversation
        self._settings = settings
        self.avatar_id = avatar_id  # what the next turn shows and says with
        self.voice = voice
        self.style = style
        self._metrics = metrics or _NoMetrics()
        self._current: _Current | None = None
        self._switching = asyncio.Lock()  # held while the current turn is cut and/or replaced
        self._speculative: Turn | None = None  # a reply to a pause, behind a closed gate
        self.speculations = {"started": 0, "confirmed": 0}

    @property
    def speaking(self) -> bool:
        """A turn is current (thinking or speaking)."""
        return self._current is not None

    # --- requests ------------------------------------------------------------------------
    async def say(self, text: str, interrupt: bool = True, fallback_voice: bool = False) -> str | None:
        """Speak `text` as given (`say`, the greeting); returns the turn id. `fallback_voice`:
        in the TTS fallback voice (an apology when the voice's own backend is what failed).
        `interrupt=False`: only if nothing is current (returns None otherwise)."""
        async with self._switching:
            if not interrupt and self._current is not None:
                return None
            await self._cut()
            turn = self._adopt(self._new_turn(lambda *_: single(text), Marks("request"),
                                              Gate(self._emit, opened=True), fallback_voice=fallback_voice))
            self._emit(AssistantText(turn_id=turn.id, text=text))
            return turn.id

    async def play(self, audio: AsyncIterator[AudioChunk]) -> str:
        """Lip-sync `audio` (an uploaded file, say) instead of a voice; returns the turn id."""
        return (await self.speak(audio, Marks("request"))).id

    async def speak(self, audio: AsyncIterator[AudioChunk], marks: Marks, turn_id: str | None = None) -> Turn:
        """Cut whatever is current and lip-sync `audio` as the next turn (a file, or a realtime
        model's reply as it streams)."""
        async with self._switching:
            await self._cut()
            return self._adopt(self._new_turn(None, marks, Gate(self._emit, opened=True), audio=audio,
                                              turn_id=turn_id))

    async def ask(self, text: str) -> str:
        """A typed message to the character, answered by the LLM like a spoken one."""
        async with self._switching:
            await self._cut()
            return self._adopt(self._reply_turn(Marks("request"), Gate(self._emit, opened=True), text=text)).id

    async def interrupt(self) -> bool:
        """Cut the current turn: its stage calls are cancelled, its media dropped. Returns
        once its `turn_end` has been emitted (False: there was none). A request starting a
        turn meanwhile is waited for, and its turn is the one cut."""
        async with self._switching:
            return await self._cut()

    async def _cut(self) -> bool:
        """interrupt(), with the switching lock held."""
        current = self._current
        if current is None:
            return False
        current.turn.abort()
        self._media.flush()  # at once: nothing more of it is heard while its calls unwind
        await current.turn.wait()
        await current.ending
        return True

    def discard_speculation(self) -> None:
        """Drop the reply started in the current pause: nothing of it was seen or recorded."""
        if self._speculative is not None:
            self._speculative.abort()
            self._speculative = None

    async def close(self) -> None:
        self.discard_speculation()
        await self.interrupt()

    # --- ListenerHooks ---------------------------------------------------------------
    def maybe_speech(self) -> None:
        """The first voiced frame: silence the avatar now; cut the turn once the VAD is sure."""
        if self._current is not None:
            self._media.hold()

    def blip(self) -> None:
        self._media.resume()

    async def speech_started(self) -> None:
        """The user started talking: barge in on whatever the avatar is doing."""
        if await self.interrupt():
            self._emit(BargeIn())
        self._emit(State(state="listening"))

    def paused(self, audio: np.ndarray, ended_at: float) -> None:
        """Start replying to what was said so far, held behind a closed gate until the VAD
        ends the utterance at this pause (speculation.py)."""
        self.discard_speculation()
        turn = self._reply_turn(Marks("speech_end", started=ended_at), Gate(self._emit), audio=audio)
        turn.start()
        self._speculative = turn
        self._count_speculation("started")

    def went_on(self) -> None:
        self.discard_speculation()

    async def utterance(self, audio: np.ndarray, ended_at: float, truncated: bool) -> None:
        if truncated:  # cut mid-speech: a pause's reply did not hear all of it
            self.discard_speculation()
            max_s = self._settings.max_utterance_s
            self._emit(UtteranceTruncated(
                max_s=max_s, message=f"you spoke for more than {max_s:g} s; I'll answer what I heard so far"))
        async with self._switching:
            early, self._speculative = self._speculative, None
            await self._cut()
            if early is not None and not early.cancelled:  # the reply to this pause is under way
                early.marks.rebase(ended_at)
                self._count_speculation("confirmed")
                turn = self._adopt(early)
            else:
                turn = self._adopt(self._reply_turn(Marks("speech_end", started=ended_at), Gate(self._emit),
                                                    audio=audio))
            turn.marks.mark("end_confirmed")  # when the VAD was sure

    # --- turns ---------------------------------------------------------------------------
    def _reply_turn(self, marks: Marks, gate: Gate, **user_input) -> Turn:
        """A conversational turn: (ASR ->) LLM -> sentences; recorded once its gate opens."""
        settings = self._settings

        def source(turn_id: str, marks: Marks, gate: Gate) -> AsyncIterator[str]:
            return reply(
                **user_input, turn_id=turn_id, asr=self._stages.asr, llm=self._stages.llm,
                conversation=self._conversation, marks=marks, emit=gate.emit,
                max_tokens=settings.max_tokens, timeouts=settings.timeouts, when_committed=gate.when_open,
            )

        return self._new_turn(source, marks, gate)

    def _new_turn(self, source: SentenceSource | None, marks: Marks, gate: Gate,
                  audio: AsyncIterator[AudioChunk] | None = None, turn_id: str | None = None,
                  fallback_voice: bool = False) -> Turn:
        """A turn speaking `source`'s sentences with the voice, or `audio` as it is."""
        turn_id = turn_id or new_turn_id()
        settings = self._settings
        if audio is None:
            def fell_back(exc: Exception) -> None:
                gate.emit(Error(stage="tts", turn_id=turn_id, message=f"{exc}; the fallback voice goes on"))

            audio = synthesized(source(turn_id, marks, gate), self._stages.tts, self.voice, settings.timeouts["tts"],
                                self.style, fell_back if settings.tts_fallback else None, fallback_voice)

        def first_frame() -> None:
            turn.marks.mark("first_frame_sent")
            self._emit(State(state="speaking", turn_id=turn.id))
            self._emit(Latency(turn_id=turn.id, marks=dict(turn.marks.values)))
            self._metrics.marks(turn.marks.values)

        turn = Turn(
            turn_id, audio, marks=marks, avatar_id=self.avatar_id, lipsync=self._stages.lipsync, media=self._media,
            chunk_frames=settings.chunk_frames, audio_context=settings.audio_context,
            timeouts=settings.timeouts, gate=gate, on_first_frame=first_frame,
        )
        return turn  # first_frame() runs only once a frame is shown, so `turn` is bound by then

    def _adopt(self, turn: Turn) -> Turn:
        """Make `turn` current (there is none now: the caller holds the switching lock and
        has cut the last one): the client sees it from here on."""
        assert self._current is None, "a turn is current: cut it first"
        if not turn.started:
            turn.start()
        self._emit(State(state="thinking", turn_id=turn.id))
        self._current = _Current(turn, asyncio.get_running_loop().create_task(self._see_through(turn)))
        turn.gate.open()
        return turn

    async def _see_through(self, turn: Turn) -> None:
        """The one place a turn ends: when its playout is done, however it got there."""
        outcome = await turn.playout.done
        if turn.failed:
            self._media.flush()  # its queued frames would end mid-word: the rest never comes
        if self._current is not None and self._current.turn is turn:
            self._current = None
        self._emit(TurnEnd(turn_id=turn.id, interrupted=outcome == "interrupted"))
        self._emit(State(state="idle"))

    def _count_speculation(self, outcome: str) -> None:
        self.speculations[outcome] += 1
        self._metrics.speculation(outcome)
