"""LipSync deployment: renders talking frames for session actors."""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from ray import serve

from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.lipsync.base import LipSyncChunk


@serve.deployment(name="LipSync")
class LipSyncDeployment:
    def __init__(self, backend: str, options: dict, avatars_dir: Path) -> None:
        self.engine = create_lipsync_engine(backend, avatars_dir=avatars_dir, **options)

    async def render(self, chunk: LipSyncChunk) -> np.ndarray:
        # A worker thread keeps the replica's event loop free to accept other sessions' chunks.
        return await asyncio.to_thread(self.engine.render, chunk)

    def avatars(self) -> list[dict]:
        return self.engine.list_avatars()
