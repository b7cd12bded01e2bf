"""One reply: sentences -> streamed TTS -> lip-sync frames -> the session's A/V queue.

The sentences come from an async iterator: a single one for `say`, or the LLM's reply split
as it streams (see conversation.py). A turn is one asyncio task; cancelling it (barge-in)
closes the sentence source (and so the LLM stream), the TTS stream and the lip-sync call in
flight. The session then flushes the clock's queue, so nothing more of the turn is heard.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import numpy as np

from actors import deadline
from actors.errors import StageFailed
from actors.media import AUDIO_PER_UNIT, AUDIO_RATE, AVUnit, MediaClock
from actors.reply_audio import ReplyAudio, ReplyChunk
from actors.speculation import Gate
from serve_app.engines.audio import StreamResampler, to_int16
from serve_app.engines.lipsync.base import LipSyncChunk
from serve_app.engines.lipsync.visemes import VisemeTrack

log = logging.getLogger(__name__)

FADE_FRAMES = 2  # frames crossfading between idle and talking where a reply starts and ends


async def single(text: str) -> AsyncIterator[str]:
    yield text


class Marks:
    """Latency marks of one turn, in ms since `started` (a time.monotonic() value)."""

    def __init__(self, origin: str = "request", started: float | None = None) -> None:
        self._started = time.monotonic() if started is None else started
        self._origin = origin
        self.values: dict[str, float] = {origin: 0.0}

    def mark(self, name: str) -> None:
        self.values.setdefault(name, round((time.monotonic() - self._started) * 1000, 1))

    def rebase(self, started: float) -> None:
        """Measure from `started` instead (the VAD's final word on when the speech ended)."""
        shift = (self._started - started) * 1000
        self._started = started
        self.values = {k: v if k == self._origin else round(v + shift, 1) for k, v in self.values.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.values


class Turn:
    """Speaks `sentences` through the clock. `marks` are shared with whatever produces the
    sentences (ASR and LLM marks for a voice turn). A speculative turn waits at its closed
    `gate` (speculation.py) with its first audio ready: lip-sync renders only once the gate is
    open, because a frame's index on the clock (which idle frame it blends with) is known
    only then."""

    def __init__(
        self,
        turn_id: str,
        sentences: AsyncIterator[str],
        *,
        marks: Marks | None = None,
        voice: str | None,
        avatar_id: str,
        tts: Any,
        lipsync: Any,
        clock: MediaClock,
        chunk_frames: int,
        on_error: Callable[[str, str], None],
        gate: Gate,
        timeouts: Mapping[str, float],
        audio_context: tuple[int, int] = (0, 0),
    ) -> None:
        """`on_error(stage, message)` reports a failed stage; `timeouts` are seconds per stage
        ("tts": per streamed chunk, "lipsync": per chunk rendered)."""
        self.id = turn_id
        self._sentences = sentences
        self.spoken: list[str] = []  # sentences handed to TTS, for the conversation history
        self._voice = voice
        self._avatar_id = avatar_id
        self._tts = tts
        self._lipsync = lipsync
        self._clock = clock
        self._chunk_frames = chunk_frames
        self._on_error = on_error
        self._audio_context = audio_context  # the lip-sync engine's (context, look-ahead) frames
        self.marks = marks or Marks()
        self.gate = gate
        self._timeouts = timeouts
        self.frames_queued = 0
        self.cancelled = False
        self.failed = False  # a stage failed: the session ends the turn as interrupted
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"turn-{self.id}")

    @property
    def done(self) -> bool:
        return self._task is None or self._task.done()

    def abort(self) -> None:
        """Cancel without waiting for the task to unwind (a discarded speculation)."""
        self.cancelled = True
        if self._task is not None:
            self._task.cancel()

    async def cancel(self) -> None:
        self.abort()
        await self.wait()

    async def wait(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            await self._speak()
        except asyncio.CancelledError:
            raise
        except StageFailed as exc:  # a failed or hung backend must not kill the session
            self.failed = True
            self._on_error(exc.stage, str(exc))
        except Exception:
            log.exception("turn %s failed", self.id)
            self.failed = True
            self._on_error("turn", "the reply failed")

    async def _speak(self) -> None:
        resampler: StreamResampler | None = None
        reply = ReplyAudio(*self._audio_context)
        visemes = VisemeTrack()  # from phoneme timings, or from the audio when a chunk has none
        pending = np.zeros(0, dtype=np.float32)  # 48 kHz audio not yet cut into chunks
        block = self._chunk_frames * AUDIO_PER_UNIT
        async with contextlib.aclosing(self._sentences) as sentences:
            async for sentence in sentences:
                self.spoken.append(sentence)
                response = self._tts.options(stream=True).stream.remote(sentence, self._voice)
                async with contextlib.aclosing(deadline.stream("tts", response, self._timeouts["tts"])) as stream:
                    async for chunk in stream:
                        self.marks.mark("tts_first_audio")
                        if resampler is None:  # the reply's first audio: start it at once
                            chunk = chunk.without_leading_silence()
                            resampler = StreamResampler(chunk.sample_rate, AUDIO_RATE)
                        pending = np.concatenate([pending, resampler.push(chunk.samples)])
                        visemes.push(chunk)
                        while len(pending) >= block:
                            reply.add(pending[:block])
                            pending = pending[block:]
                            for ready in reply.ready():
                                await self._queue_frames(ready, visemes)
        if resampler is None:
            return  # nothing to say
        pending = np.concatenate([pending, resampler.flush()])
        pending = np.pad(pending, (0, -len(pending) % AUDIO_PER_UNIT))
        for start in range(0, len(pending), block):
            reply.add(pending[start : start + block])
        reply.finish()
        for ready in reply.ready():
            await self._queue_frames(ready, visemes)

    async def _queue_frames(self, part: ReplyChunk, visemes: VisemeTrack) -> None:
        await self.gate.wait()
        n = part.n
        chunk = LipSyncChunk(
            avatar_id=self._avatar_id,
            first_frame=self._clock.next_speech_index(),
            audio=part.audio16,
            visemes=visemes.visemes(part.first, n),
            fade_in=FADE_FRAMES if part.first == 0 else 0,
            fade_out=FADE_FRAMES if part.last else 0,
            segment=part.segment if self._audio_context != (0, 0) else None,
            segment_offset=part.segment_offset,
            reply_frame=part.first,
            reply_samples=part.total,
        )
        # Routed to a replica that already holds this avatar (multiplexed by avatar id).
        response = self._lipsync.options(multiplexed_model_id=self._avatar_id).render.remote(chunk)
        frames = await deadline.call("lipsync", response, self._timeouts["lipsync"])
        pcm = to_int16(part.audio48)
        for i in range(n):
            await self._clock.put(
                AVUnit(
                    frame=frames[i],
                    audio=pcm[i * AUDIO_PER_UNIT : (i + 1) * AUDIO_PER_UNIT],
                    turn_id=self.id,
                    last=part.last and i == n - 1,
                )
            )
        self.frames_queued += n
