"""Render jobs: avatar + text (or an audio file) -> an MP4, off the serving path.

A render is an ordinary turn (actors/turn.py) whose media output is a file
(actors/transports/file.py) instead of the live clock: the same TTS, lip-sync and A/V
pairing as a session, as fast as the stages answer. One job runs at a time, in the Renders
deployment's own process, at a lower CPU priority than live sessions (they keep their frame
rate while it renders). Finished files are removed `ttl_s` after they are done.

States: queued -> synthesising (text only: the voice is being made) -> rendering
(lip-sync; `percent` once the length is known) -> encoding -> done | failed | cancelled.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actors.errors import CapacityError, SessionNotFound
from actors.speculation import Gate
from actors.transports.file import FileOut
from actors.turn import Turn, audio_chunks, single, synthesized
from serve_app.config import private_dir
from serve_app.engines.media import FPS
from serve_app.engines.tts.base import AudioChunk
from serve_app.events import Error

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20  # bytes per read() call when the ingress streams a finished file
DONE_STATES = ("done", "failed", "cancelled")


@dataclass
class RenderJob:
    id: str
    avatar: str
    state: str = "queued"
    # Every state the job has been in, with when it entered it (s since created): a client
    # polling now and then still learns where the time went.
    history: list[tuple[str, float]] = field(default_factory=lambda: [("queued", 0.0)])
    percent: float | None = None
    error: str | None = None
    duration_s: float | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    bytes: int | None = None

    def public(self) -> dict:
        return asdict(self)

    def enter(self, state: str) -> None:
        self.state = state
        self.history.append((state, round(time.time() - self.created, 3)))


@dataclass
class _Work:
    job: RenderJob
    text: str | None
    pcm: np.ndarray | None
    rate: int
    voice: str | None
    task: asyncio.Task | None = None

    def free(self) -> None:
        """Drop the input (an uploaded file's decoded audio is up to ~14 MB) once it is of no
        more use: the job's record stays for its status."""
        self.text = self.pcm = None


class RenderJobs:
    def __init__(self, stages: Any, folder: Path, *, ttl_s: float, max_queued: int, chunk_frames: int,
                 timeouts: Mapping[str, float], audio_context: tuple[int, int] = (0, 0)) -> None:
        self._stages = stages
        self._ttl_s = ttl_s
        self._max_queued = max_queued
        self._chunk_frames = chunk_frames
        self._timeouts = timeouts
        self._audio_context = audio_context
        self._jobs: dict[str, _Work] = {}
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        private_dir(folder)  # what people had said, rendered: this user's alone
        for stale in folder.iterdir():  # a dead replica's files: nobody can ask for them any more
            if stale.is_dir() and time.time() - stale.stat().st_mtime > ttl_s:
                shutil.rmtree(stale, ignore_errors=True)
        self._folder = folder / uuid.uuid4().hex  # this replica's own (other apps share `folder`)
        self._folder.mkdir()

    def remove_all(self) -> None:
        """At shutdown: this replica's files go with it."""
        shutil.rmtree(self._folder, ignore_errors=True)

    def start(self, avatar: str, voice: str | None, text: str | None = None,
              pcm: np.ndarray | None = None, rate: int = 0) -> dict:
        self._sweep()
        waiting = sum(1 for w in self._jobs.values() if w.job.state not in DONE_STATES)
        if waiting >= self._max_queued:
            raise CapacityError(f"{waiting} renders are queued or running, the most allowed; retry later", 30)
        job = RenderJob(uuid.uuid4().hex, avatar)
        if pcm is not None:
            job.duration_s = round(len(pcm) / rate, 2)
        work = _Work(job, text, pcm, rate, voice)
        self._jobs[job.id] = work
        self._queue.put_nowait(work)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())
        return job.public()

    def status(self, job_id: str) -> dict | None:
        self._sweep()
        work = self._jobs.get(job_id)
        return work.job.public() if work else None

    async def cancel(self, job_id: str) -> dict:
        """Cancel a queued or running job, or remove a finished one and its file."""
        work = self._jobs.get(job_id)
        if work is None:
            raise SessionNotFound(f"no render {job_id!r}")
        if work.job.state not in DONE_STATES:
            work.job.enter("cancelled")
            work.free()  # a queued job's audio goes now, not when its record expires
            if work.task is not None:
                work.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work.task
        else:
            self._path(job_id).unlink(missing_ok=True)
            del self._jobs[job_id]
        return work.job.public()

    def read(self, job_id: str, offset: int) -> bytes | None:
        """Up to READ_CHUNK bytes of a finished render from `offset` (b"" at the end)."""
        work = self._jobs.get(job_id)
        if work is None or work.job.state != "done":
            return None
        with open(self._path(job_id), "rb") as f:
            f.seek(offset)
            return f.read(READ_CHUNK)

    # --- the worker ---------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        return self._folder / f"{job_id}.mp4"

    async def _work(self) -> None:
        while not self._queue.empty():
            work = self._queue.get_nowait()
            if work.job.state == "cancelled":
                continue
            work.task = asyncio.get_running_loop().create_task(self._render(work))
            with contextlib.suppress(asyncio.CancelledError):
                await work.task

    async def _render(self, work: _Work) -> None:
        job = work.job
        self._folder.mkdir(parents=True, exist_ok=True)  # another replica may have swept it, idle
        out = FileOut(self._path(job.id), on_frame=lambda frames: self._progress(job, frames))
        try:
            await self._run_turn(work, out)
            job.percent = 100.0
            job.enter("encoding")
            await asyncio.to_thread(out.finish)
            job.bytes = out.path.stat().st_size
            job.enter("done")
        except asyncio.CancelledError:
            out.discard()
            if job.state != "cancelled":
                job.enter("cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - the job fails, the deployment lives on
            log.warning("render %s failed: %r", job.id, exc)
            out.discard()
            job.error = str(exc)[:300] or type(exc).__name__
            job.enter("failed")
        finally:
            job.finished = time.time()
            work.free()

    async def _run_turn(self, work: _Work, out: FileOut) -> None:
        job = work.job
        errors: list[Error] = []
        if work.text is not None:
            job.enter("synthesising")
            audio = synthesized(single(work.text), self._stages.tts, work.voice, self._timeouts["tts"])
        else:
            job.enter("rendering")
            audio = audio_chunks(work.pcm, work.rate)
        turn = Turn(job.id, self._measured(audio, job), avatar_id=job.avatar, lipsync=self._stages.lipsync,
                    media=out, chunk_frames=self._chunk_frames, timeouts=self._timeouts,
                    gate=Gate(lambda e: errors.append(e) if isinstance(e, Error) else None, opened=True),
                    audio_context=self._audio_context)
        turn.start()
        try:
            await turn.playout.done
            await turn.wait()
        finally:
            turn.abort()
        if turn.failed:
            raise RuntimeError(errors[0].message if errors else "the render failed")
        if out.frames == 0:
            raise RuntimeError("there was nothing to say")

    async def _measured(self, audio: AsyncIterator[AudioChunk], job: RenderJob) -> AsyncIterator[AudioChunk]:
        """The audio as it comes, noting its length: once it is all there, the render's
        percent is known."""
        seconds = 0.0
        async with contextlib.aclosing(audio) as chunks:
            async for chunk in chunks:
                seconds += len(chunk.samples) / chunk.sample_rate
                yield chunk
        job.duration_s = round(seconds, 2)
        if job.state != "rendering":
            job.enter("rendering")

    @staticmethod
    def _progress(job: RenderJob, frames: int) -> None:
        if job.duration_s:
            job.percent = round(min(99.0, 100 * frames / math.ceil(job.duration_s * FPS)), 1)

    def _sweep(self) -> None:
        """Forget finished jobs past their TTL, and their files."""
        now = time.time()
        for job_id, work in list(self._jobs.items()):
            if work.job.finished is not None and now - work.job.finished > self._ttl_s:
                self._path(job_id).unlink(missing_ok=True)
                del self._jobs[job_id]
