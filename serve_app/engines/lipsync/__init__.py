"""Lip-sync backends by name; adding one is a module plus a line in ``_ENGINES``."""
from __future__ import annotations

from typing import Any

from ..registry import create_engine
from .base import LipSyncChunk, LipSyncEngine

_ENGINES = {
    "viseme": ("viseme_engine", "VisemeLipSyncEngine"),
    "wav2lip": ("neural.wav2lip_engine", "Wav2LipEngine"),  # needs the `neural` extra
    "musetalk": ("neural.musetalk_engine", "MuseTalkEngine"),
}


def create_lipsync_engine(name: str, **options: Any) -> LipSyncEngine:
    """Build the lip-sync backend called ``name`` with its config ``options``."""
    return create_engine("lip-sync", __package__, _ENGINES, name, options)


__all__ = ["LipSyncChunk", "LipSyncEngine", "create_lipsync_engine"]
