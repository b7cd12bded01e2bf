"""Renders deployment: MP4 render jobs (actors/render.py) in their own replica process, at a
lower CPU priority than the live sessions."""
from __future__ import annotations

import os
from typing import Any

from ray import serve

from actors.render import RenderJobs
from actors.turn_controller import StageHandles
from serve_app.config import Profile


@serve.deployment(name="Renders", num_replicas=1)
class RendersDeployment:
    async def __init__(self, profile: Profile, tts: Any, lipsync: Any) -> None:
        os.nice(profile.renders.nice)
        self.jobs = RenderJobs(
            StageHandles(tts=tts, lipsync=lipsync, asr=None, llm=None), profile.renders.folder,
            ttl_s=profile.renders.ttl_s, max_queued=profile.renders.max_queued,
            chunk_frames=profile.lipsync.chunk_frames,
            timeouts={"tts": profile.tts.timeout_s, "lipsync": profile.lipsync.timeout_s},
            audio_context=tuple(await lipsync.audio_context.remote()),
        )

    async def start(self, avatar: str, voice: str | None, text: str | None = None,
                    pcm: Any = None, rate: int = 0) -> dict:
        return self.jobs.start(avatar, voice, text, pcm, rate)

    def status(self, job_id: str) -> dict | None:
        return self.jobs.status(job_id)

    async def cancel(self, job_id: str) -> dict:
        return await self.jobs.cancel(job_id)

    def read(self, job_id: str, offset: int) -> bytes | None:
        return self.jobs.read(job_id, offset)

    def __del__(self) -> None:
        self.jobs.remove_all()
