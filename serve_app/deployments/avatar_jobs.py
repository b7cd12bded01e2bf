"""AvatarJobs deployment: avatar preparation, in its own replica process off the serving path."""
from __future__ import annotations

from pathlib import Path

from ray import serve

from serve_app.avatars.jobs import AvatarJobs, latent_encoder


@serve.deployment(name="AvatarJobs", num_replicas=1)
class AvatarJobsDeployment:
    def __init__(self, avatars_dir: Path, lipsync_backend: str = "viseme", lipsync_options: dict | None = None,
                 time_limit_s: float | None = None) -> None:
        self.jobs = AvatarJobs(avatars_dir, latent_encoder(lipsync_backend, lipsync_options or {}), time_limit_s)

    async def start(self, data: bytes, filename: str, avatar_id: str, name: str | None) -> dict:
        return self.jobs.start(data, filename, avatar_id, name).public()

    async def start_path(self, source: str, avatar_id: str, name: str | None) -> dict:
        return self.jobs.start_path(Path(source), avatar_id, name).public()

    def status(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        return job.public() if job else None

    def cancel(self, job_id: str) -> dict | None:
        job = self.jobs.cancel(job_id)
        return job.public() if job else None
