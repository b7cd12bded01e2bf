"""Lip-sync backends, chosen by name in config. Adding one = a module + a line in ENGINES."""
from __future__ import annotations

from typing import Callable

from serve_app.engines.lipsync.base import LipSyncChunk, LipSyncEngine


def _viseme(**options) -> LipSyncEngine:
    from serve_app.engines.lipsync.viseme_engine import VisemeLipSyncEngine

    return VisemeLipSyncEngine(**options)


# Factories import their module lazily, so choosing one backend never loads another's deps.
ENGINES: dict[str, Callable[..., LipSyncEngine]] = {"viseme": _viseme}


def create_lipsync_engine(name: str, **options) -> LipSyncEngine:
    factory = ENGINES.get(name)
    if factory is None:
        raise ValueError(f"unknown lip-sync engine {name!r}; known: {', '.join(sorted(ENGINES))}")
    return factory(**options)


__all__ = ["ENGINES", "LipSyncChunk", "LipSyncEngine", "create_lipsync_engine"]
