"""Avatar preparation jobs: one at a time in a worker thread, with stage, progress and cancel.

The AvatarJobs deployment hosts this in its own replica process, off the serving path: a
preparation decoding a 720p clip never slows the session actors or the lip-sync replicas.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from serve_app.avatars.face_points import shared_mesh
from serve_app.avatars.prepare import AvatarExists, Encoder, prepare_avatar
from serve_app.avatars.store import AvatarStore
from serve_app.engines.lipsync.sprite import MANIFEST

MAX_JOBS_KEPT = 50  # finished jobs remembered for GET /api/avatars/jobs/{id}
MAX_QUEUED = 8  # jobs waiting or running; each queued upload holds its file on disk
STALE_AFTER_S = 3600.0  # temporary folders older than this are a crashed job's (no time limit set)


class JobsBusy(Exception):
    """Too many preparations queued: 429, try again when some are done."""


@dataclass
class Job:
    id: str
    avatar_id: str
    state: str = "queued"  # queued, running, done, failed, cancelled
    stage: str = "queued"
    percent: float = 0.0
    error: str | None = None
    # Stored frames where the face could not be read (covered by a hand, say): their mouth
    # is never redrawn. Set when done.
    hidden_frames: int | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    def public(self) -> dict:
        return asdict(self)


def latent_encoder(backend: str, options: dict) -> Encoder | None:
    """MuseTalk's reference-latent encoder when that is the lip-sync backend, loaded on the
    first job (so a replica that never prepares an avatar never loads the model)."""
    if backend != "musetalk":
        return None
    model = []

    def encode(crops):
        if not model:
            from serve_app.engines.lipsync.neural.musetalk_engine import load_model

            model.append(load_model(**options))
        return model[0].encode_reference(crops)

    return encode


class AvatarJobs:
    def __init__(self, avatars_dir: Path, encoder: Encoder | None = None, time_limit_s: float | None = None) -> None:
        """Sweeps what crashed jobs left first: no job of this replica runs yet, and one of
        another replica or app sharing the folder is younger than its time limit."""
        self.avatars_dir = Path(avatars_dir)
        AvatarStore(self.avatars_dir).sweep(older_than_s=2 * time_limit_s if time_limit_s else STALE_AFTER_S)
        self._time_limit_s = time_limit_s  # per job, from its start
        self._encoder = encoder  # the neural engine's reference latents, when one is configured
        shared_mesh()  # at start-up: missing face-mesh models name their package now, not per job
        self._jobs: dict[str, Job] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    def start(self, data: bytes, filename: str, avatar_id: str, name: str | None) -> Job:
        """Queue a preparation of an uploaded image or video (kept in a temp dir until done)."""
        self._check_free(avatar_id)
        # In the avatars folder (one file system, swept at start if a crash leaves it).
        upload_dir = Path(tempfile.mkdtemp(prefix=".tmp-upload-", dir=self.avatars_dir))
        source = upload_dir / ("source" + Path(filename).suffix.lower()[:8])
        source.write_bytes(data)
        return self._enqueue(source, avatar_id, name, owned=True)

    def start_path(self, source: Path, avatar_id: str, name: str | None) -> Job:
        """Queue a preparation of a file already on the server (the caller checked it is
        allowed); the file is only read."""
        self._check_free(avatar_id)
        return self._enqueue(Path(source), avatar_id, name, owned=False)

    def _enqueue(self, source: Path, avatar_id: str, name: str | None, owned: bool) -> Job:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        job = Job(uuid.uuid4().hex[:16], avatar_id)
        self._jobs[job.id] = job
        self._cancel[job.id] = threading.Event()
        self._queue.put_nowait((job, source, name, owned))
        self._forget_old()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.state in ("queued", "running"):
            self._cancel[job_id].set()
        return job

    def _check_free(self, avatar_id: str) -> None:
        """Checked here, where jobs are queued (one replica, no await in between), so two
        uploads racing with one id get one job and one AvatarExists, never two jobs."""
        pending = [j for j in self._jobs.values() if j.state in ("queued", "running")]
        if len(pending) >= MAX_QUEUED:
            raise JobsBusy(f"{len(pending)} avatar preparations are queued, the most allowed; retry when one is done")
        busy = any(j.avatar_id == avatar_id for j in pending)
        if busy or (self.avatars_dir / avatar_id).exists():
            raise AvatarExists(f"avatar {avatar_id!r} already exists; delete it first or pick another id")

    async def _run(self) -> None:
        while True:
            job, source, name, owned = await self._queue.get()
            try:
                await self._prepare(job, source, name)
            finally:
                if owned:  # an upload's temp dir; a server-side source file is left alone
                    shutil.rmtree(source.parent, ignore_errors=True)

    async def _prepare(self, job: Job, source: Path, name: str | None) -> None:
        stop = self._cancel[job.id]
        if stop.is_set():
            job.state = job.stage = "cancelled"
            job.finished = time.time()
            return
        job.state = "running"

        def progress(stage: str, fraction: float) -> None:  # called from the worker thread
            job.stage, job.percent = stage, round(100 * max(0.0, min(1.0, fraction)), 1)

        try:
            folder = await asyncio.to_thread(
                prepare_avatar, source, job.avatar_id, self.avatars_dir,
                name=name, progress=progress, cancelled=stop.is_set, encoder=self._encoder,
                time_limit_s=self._time_limit_s,
            )
            job.hidden_frames = len(json.loads((folder / MANIFEST).read_text())["landmarks_hidden"])
            job.state, job.stage, job.percent = "done", "done", 100.0
        except Exception as exc:  # AvatarError messages say what is wrong with the input
            job.state = job.stage = "cancelled" if stop.is_set() else "failed"
            job.error = None if stop.is_set() else str(exc)
        finally:
            job.finished = time.time()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.finished is not None]
        for job in sorted(finished, key=lambda j: j.finished)[: max(0, len(finished) - MAX_JOBS_KEPT)]:
            del self._jobs[job.id]
            del self._cancel[job.id]
