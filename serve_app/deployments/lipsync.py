"""LipSync deployment: renders talking frames for session actors.

Avatars are multiplexed: callers pass `multiplexed_model_id=<avatar id>`, so Serve routes a
session's chunks to a replica that already holds its avatar, and each replica keeps at most
`max_avatars_per_replica` of them loaded (least recently used are dropped).

Chunks are batched: `@serve.batch` gathers the chunks of all sessions waiting on this replica
into one engine call (one forward pass for neural engines). Batch size and wait come from the
deployment's `user_config` (see LipSyncBatching) and can change while the app runs.

Each replica reports how much of its chunks' playout time their renders take (serve_app/
autoscaling.py), for the deadline-based autoscaling policy.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from ray import serve

from serve_app.autoscaling import DEADLINE_USE, DeadlineWindow
from serve_app.config import ConfigError, LipSyncBatching
from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.lipsync.base import LipSyncChunk
from serve_app.engines.lipsync.viseme_engine import MISSING, approx_nbytes, folder_version
from serve_app.engines.media import FRAME_S

MAX_AVATARS_PER_REPLICA = 8
_DEFAULT = LipSyncBatching()  # until a user_config says otherwise


@serve.deployment(name="LipSync")
class LipSyncDeployment:
    def __init__(self, backend: str, options: dict, avatars_dir: Path) -> None:
        self.engine = create_lipsync_engine(backend, avatars_dir=avatars_dir, **options)
        self._avatars_dir = Path(avatars_dir)
        self._loaded: dict[str, int] = {}  # avatar id -> bytes, for the cache report
        self._batching = _DEFAULT
        self._batches: deque[int] = deque(maxlen=32)  # recent batch sizes, for /api/health and tests
        self._deadlines = DeadlineWindow()
        self._last_use: float | None = None  # the last deadline use reported to Serve

    def reconfigure(self, user_config: dict) -> None:
        try:
            batching = LipSyncBatching(**(user_config or {}))
        except ValidationError as exc:
            raise ConfigError(f"LipSync user_config: {exc}") from None
        self._render_batch.set_max_batch_size(batching.max_batch_size)
        self._render_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        self._batching = batching

    @serve.multiplexed(max_num_models_per_replica=MAX_AVATARS_PER_REPLICA)
    async def _avatar(self, avatar_id: str):
        slot = _Slot(avatar_id, self._loaded)
        await self._load_into(slot)
        return slot

    async def _load_into(self, slot: "_Slot") -> None:
        slot.version = folder_version(self._avatars_dir / slot.id)
        slot.avatar = await asyncio.to_thread(self.engine.load, slot.id)
        self._loaded[slot.id] = approx_nbytes(slot.avatar)

    async def _current(self, avatar_id: str) -> "_Slot":
        """The cached avatar, reloaded if its folder was replaced since (deleted and prepared
        again under the same id): Serve's multiplexing cache knows ids, not versions."""
        slot = await self._avatar(avatar_id)
        version = folder_version(self._avatars_dir / avatar_id)
        if version not in (slot.version, MISSING):  # a deleted one keeps talking as loaded
            await self._load_into(slot)
        return slot

    async def render(self, chunk: LipSyncChunk) -> np.ndarray:
        started = time.monotonic()
        frames = await self._render_batch(chunk)
        self._deadlines.record(time.monotonic() - started, chunk.n_frames * FRAME_S)
        return frames

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve asks each replica for its custom autoscaling metrics (DeadlinePolicy)."""
        self._last_use = self._deadlines.use()
        return {DEADLINE_USE: self._last_use}

    @serve.batch(max_batch_size=_DEFAULT.max_batch_size, batch_wait_timeout_s=_DEFAULT.batch_wait_timeout_s)
    async def _render_batch(self, chunks: list[LipSyncChunk]) -> list[np.ndarray]:
        slots = [await self._current(c.avatar_id) for c in chunks]
        self._batches.append(len(chunks))
        # A worker thread keeps the replica's event loop free to gather the next batch.
        return await asyncio.to_thread(self.engine.render_batch, chunks, [s.avatar for s in slots])

    def audio_context(self) -> tuple[int, int]:
        """Frames of audio the engine needs before a chunk and after its last frame."""
        return self.engine.context_frames, self.engine.lookahead_frames

    def cache(self) -> dict:
        """What this replica holds: avatar id -> approximate bytes, the bound, and batching."""
        return {
            "avatars": dict(self._loaded),
            "max_avatars": MAX_AVATARS_PER_REPLICA,
            "batching": self._batching.model_dump(),
            "recent_batch_sizes": list(self._batches),
            "deadline_use": self._last_use,
        }


class _Slot:
    """Serve drops a multiplexed model from its LRU by calling `__del__`: keep the report true."""

    def __init__(self, avatar_id: str, loaded: dict[str, int]) -> None:
        self.id = avatar_id
        self.avatar = None
        self.version: tuple[int, int] | None = MISSING  # folder_version of what `avatar` was loaded from
        self._loaded = loaded

    def __del__(self) -> None:
        self._loaded.pop(self.id, None)
