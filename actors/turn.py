"""One reply: speech audio -> lip-sync frames -> the session's media output.

The audio comes from an async iterator: `synthesized(sentences)` for text (a single
sentence for `say`, or the LLM's reply split as it streams, see conversation.py), or the
chunks of an audio file. A turn is one asyncio task; `abort()` (barge-in) cancels it, which
closes the audio source (and so the TTS stream, the sentence source and the LLM stream) and
the lip-sync call in flight. The turn knows its playout: `playout.done` resolves with "played"
when the media output has shown its last frame (at once when there was nothing to say), or
"interrupted" when it was cut or failed; the turn controller ends every turn there.
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
from actors.clock import AVUnit, MediaOut, Playout
from actors.errors import StageFailed
from actors.reply_audio import ReplyAudio, ReplyChunk
from actors.speculation import Gate
from serve_app.engines.audio import StreamResampler, to_int16
from serve_app.engines.lipsync.base import LipSyncChunk
from serve_app.engines.lipsync.visemes import VisemeTrack
from serve_app.engines.media import OUTPUT_PER_FRAME, OUTPUT_RATE
from serve_app.engines.tts.base import DEFAULT_STYLE, AudioChunk, VoiceStyle
from serve_app.events import Error

log = logging.getLogger(__name__)

FADE_FRAMES = 2  # frames crossfading between idle and talking where a reply starts and ends
# Mid-reply, a lip-sync chunk must be back this long before the queued speech runs out, or
# its audio plays on the previous frame instead (video gives way, the voice keeps time).
LIPSYNC_MARGIN_S = 0.04


async def single(text: str) -> AsyncIterator[str]:
    yield text


async def synthesized(sentences: AsyncIterator[str], tts: Any, voice: str | None, timeout_s: float,
                      style: VoiceStyle = DEFAULT_STYLE,
                      on_fallback: Callable[[StageFailed], None] | None = None,
                      fallback: bool = False) -> AsyncIterator[AudioChunk]:
    """Each sentence's TTS audio as it streams, waiting at most `timeout_s` for each chunk.

    With `on_fallback`, a voice that fails hands the reply to the fallback voice: it is told
    the failure once, and the fallback says the failed sentence (or, if some of it was
    heard, the next one) and the rest of the reply. `fallback`: the fallback voice from the
    start."""
    async with contextlib.aclosing(sentences) as sentences:
        async for sentence in sentences:
            heard = False
            while True:
                response = tts.options(stream=True).stream.remote(sentence, voice, style, fallback)
                try:
                    async with contextlib.aclosing(deadline.stream("tts", response, timeout_s)) as stream:
                        async for chunk in stream:
                            heard = True
                            yield chunk
                    break
                except StageFailed as exc:
                    if fallback or on_fallback is None:
                        raise
                    fallback = True
                    on_fallback(exc)
                    if heard:
                        break


def audio_chunks(pcm: np.ndarray, sample_rate: int, chunk_s: float = 0.5):
    """An audio file as a stream of AudioChunks, as a TTS would send it."""
    step = int(sample_rate * chunk_s)

    async def chunks():
        for start in range(0, len(pcm), step):
            yield AudioChunk(np.ascontiguousarray(pcm[start:start + step]), sample_rate)

    return chunks()


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
    """Speaks `audio` to `media`. `marks` are shared with whatever produces the
    sentences (ASR and LLM marks for a voice turn). A speculative turn waits at its closed
    `gate` (speculation.py) with its first audio ready: lip-sync renders only once the gate is
    open, because a frame's index on the clock (which idle frame it blends with) is known
    only then."""

    def __init__(
        self,
        turn_id: str,
        audio: AsyncIterator[AudioChunk],
        *,
        marks: Marks | None = None,
        avatar_id: str,
        lipsync: Any,
        media: MediaOut,
        chunk_frames: int,
        gate: Gate,
        timeouts: Mapping[str, float],
        audio_context: tuple[int, int] = (0, 0),
        on_first_frame: Callable[[], None] = lambda: None,
    ) -> None:
        """A failed stage is reported through `gate` (an error event); `timeouts` are seconds
        per stage ("lipsync": per chunk rendered)."""
        self.id = turn_id
        self._audio = audio
        self._avatar_id = avatar_id
        self._lipsync = lipsync
        self._media = media
        self._chunk_frames = chunk_frames
        self._audio_context = audio_context  # the lip-sync engine's (context, look-ahead) frames
        self.marks = marks or Marks()
        self.gate = gate
        self._timeouts = timeouts
        self.frames_queued = 0
        self._last_frame: np.ndarray | None = None
        self.cancelled = False
        self.failed = False  # a stage failed: the rest of the reply will never come
        self.playout = Playout(turn_id, on_first_frame)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"turn-{self.id}")

    @property
    def started(self) -> bool:
        return self._task is not None

    def abort(self) -> None:
        """Cancel without waiting for the task to unwind (a discarded speculation)."""
        self.cancelled = True
        if self._task is not None:
            self._task.cancel()
        self.playout.finish("interrupted")


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
            self._fail(exc.stage, str(exc))
        except Exception:
            log.exception("turn %s failed", self.id)
            self._fail("turn", "the reply failed")
        else:
            if self.frames_queued == 0:
                self.playout.finish("played")  # nothing to say: done as soon as it is known

    def _fail(self, stage: str, message: str) -> None:
        self.failed = True
        self.gate.emit(Error(stage=stage, turn_id=self.id, message=message))
        self.playout.finish("interrupted")

    async def _speak(self) -> None:
        resampler: StreamResampler | None = None
        reply = ReplyAudio(*self._audio_context)
        visemes = VisemeTrack()  # from phoneme timings, or from the audio when a chunk has none
        pending = np.zeros(0, dtype=np.float32)  # 48 kHz audio not yet cut into chunks
        block = self._chunk_frames * OUTPUT_PER_FRAME
        async with contextlib.aclosing(self._audio) as audio:
            async for chunk in audio:
                self.marks.mark("tts_first_audio")
                if resampler is None:  # the reply's first audio: start it at once
                    chunk = chunk.without_leading_silence()
                    resampler = StreamResampler(chunk.sample_rate, OUTPUT_RATE)
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
        pending = np.pad(pending, (0, -len(pending) % OUTPUT_PER_FRAME))
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
            first_frame=self._media.next_speech_index(),
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
        slack = self._media.slack_s() if self._last_frame is not None else None
        due = None if slack is None else max(0.0, slack - LIPSYNC_MARGIN_S)
        frames = await deadline.call("lipsync", response, self._timeouts["lipsync"], due_s=due)
        repeated = frames is None  # late: the audio goes on, over the last frame shown
        pcm = to_int16(part.audio48)
        for i in range(n):
            await self._media.put(
                AVUnit(
                    frame=self._last_frame if repeated else frames[i],
                    audio=pcm[i * OUTPUT_PER_FRAME : (i + 1) * OUTPUT_PER_FRAME],
                    playout=self.playout,
                    last=part.last and i == n - 1,
                    viseme=chunk.visemes[i],
                    repeated=repeated,
                )
            )
        if not repeated:
            self._last_frame = frames[n - 1]
        self.frames_queued += n
