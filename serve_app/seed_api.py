"""The MuseTalk seed's streaming API, with its exact paths and bodies, on our sessions.

`POST /api/avatar/create`, `GET /api/avatar/list`, `POST /api/inference/start`,
`GET /api/stream/{id}` (MJPEG for a plain `<img>`), `POST /api/inference/stop/{id}`. The
routes are in ingress.py; the request models, the avatar listing and the MJPEG framing are
here. An inference is a session created with `stream=True` (SessionPool.create): no
greeting, and its stream and stop need no token (the seed has none; the session id in the
stream URL is the key to it).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, Field

from actors.errors import SessionNotFound
from serve_app.avatars.store import AvatarStore
from serve_app.engines.media import FPS

BOUNDARY = "frame"
MJPEG_MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
AUDIO_RATE = 24_000  # an audio file is decoded to this before it goes to the session
JOB_POLL_S = 0.5


class AvatarCreate(BaseModel):
    avatar_id: str = Field(..., min_length=1, max_length=64)
    video_path: str = Field(..., min_length=1, max_length=4096)
    # MuseTalk's own preparation knobs: accepted so its clients work unchanged. Our
    # preparation finds the face box itself and batches on its own, so they change nothing.
    bbox_shift: int = Field(0, ge=-100, le=100)
    batch_size: int = Field(4, ge=1, le=64)


class InferenceStart(BaseModel):
    avatar_id: str = Field(..., min_length=1, max_length=64)
    audio_path: str | None = Field(None, min_length=1, max_length=4096)
    text: str | None = Field(None, max_length=20_000, description="instead of audio: spoken with the character's voice")
    fps: int = Field(FPS, description="frames per second of the MJPEG stream: 25, 5 or 1")
    skip_save_images: bool = Field(True, description="accepted for MuseTalk clients; frames are never saved")
    character: str | None = Field(None, min_length=1, max_length=64)


def body_schema(model: type[BaseModel]) -> dict:
    """OpenAPI for a route that reads its body itself: the model as JSON, or as form fields
    beside an `audio` file."""
    schema = model.model_json_schema()
    form = {**schema, "properties": {**schema["properties"], "audio": {"type": "string", "format": "binary"}}}
    return {"requestBody": {"content": {"application/json": {"schema": schema},
                                        "multipart/form-data": {"schema": form}}}}


def success(message: str, **fields: Any) -> dict:
    return {"status": "success", "message": message, **fields}


def avatar_list(store: AvatarStore) -> list[dict]:
    """Prepared avatars in the seed's shape (from their manifests alone)."""
    return [{"avatar_id": a["id"], "status": "ready", "created_at": a["created_at"]} for a in store.list()]


async def wait_for_job(jobs: Any, job_id: str, limit_s: float) -> dict:
    """Poll a preparation job until it is done, failed or cancelled (or `limit_s` passes)."""
    deadline = time.monotonic() + limit_s
    while True:
        job = await jobs.status.remote(job_id)
        if job is None or job["state"] in ("done", "failed", "cancelled"):
            return job or {"state": "failed", "error": "the job was lost"}
        if time.monotonic() > deadline:
            return {"state": "failed", "error": f"not done within {limit_s:g} s"}
        await asyncio.sleep(JOB_POLL_S)


def mjpeg_part(jpeg: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg + b"\r\n")


async def mjpeg_stream(session: Any, viewer_id: str) -> AsyncIterator[bytes]:
    """The body of an MJPEG response: the viewer's frames as they are encoded, until the
    session ends or the client goes (the viewer is closed either way)."""
    try:
        while True:
            try:
                frames = await session.mjpeg_pull.remote(viewer_id)
            except SessionNotFound:  # the session ended under the stream
                return
            if frames is None:
                return
            for jpeg in frames:
                yield mjpeg_part(jpeg)
    finally:
        with contextlib.suppress(Exception):
            await session.mjpeg_close.remote(viewer_id)
