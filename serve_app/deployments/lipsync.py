"""LipSync deployment: renders talking frames for session actors.

Avatars are multiplexed: callers pass `multiplexed_model_id=<avatar id>`, so Serve routes a
session's chunks to a replica that already holds its avatar, and each replica keeps at most
`max_avatars_per_replica` of them loaded (least recently used are dropped).
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from ray import serve

from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.lipsync.base import LipSyncChunk
from serve_app.engines.lipsync.viseme_engine import approx_nbytes

MAX_AVATARS_PER_REPLICA = 8


@serve.deployment(name="LipSync")
class LipSyncDeployment:
    def __init__(self, backend: str, options: dict, avatars_dir: Path) -> None:
        self.engine = create_lipsync_engine(backend, avatars_dir=avatars_dir, **options)
        self._loaded: dict[str, int] = {}  # avatar id -> bytes, for the cache report

    @serve.multiplexed(max_num_models_per_replica=MAX_AVATARS_PER_REPLICA)
    async def _avatar(self, avatar_id: str):
        avatar = await asyncio.to_thread(self.engine.load, avatar_id)
        self._loaded[avatar_id] = approx_nbytes(avatar)
        return _Slot(avatar, avatar_id, self._loaded)

    async def render(self, chunk: LipSyncChunk) -> np.ndarray:
        slot = await self._avatar(serve.get_multiplexed_model_id() or chunk.avatar_id)
        # A worker thread keeps the replica's event loop free to accept other sessions' chunks.
        return await asyncio.to_thread(self.engine.render, chunk, slot.avatar)

    def avatars(self) -> list[dict]:
        return self.engine.list_avatars()

    def cache(self) -> dict:
        """What this replica holds: avatar id -> approximate bytes, and the bound."""
        return {"avatars": dict(self._loaded), "max_avatars": MAX_AVATARS_PER_REPLICA}


class _Slot:
    """Serve drops a multiplexed model from its LRU by calling `__del__`: keep the report true."""

    def __init__(self, avatar, avatar_id: str, loaded: dict[str, int]) -> None:
        self.avatar = avatar
        self._id = avatar_id
        self._loaded = loaded

    def __del__(self) -> None:
        self._loaded.pop(self._id, None)
