"""TTS backends by name; adding one is a module plus a line in ``_ENGINES``."""
from __future__ import annotations

from typing import Any

from ..registry import create_engine
from .base import AudioChunk, PhonemeSpan, TTSEngine

_ENGINES = {
    "piper": ("piper_tts", "PiperTTS"),
}


def create_tts_engine(name: str, **options: Any) -> TTSEngine:
    """Build the TTS backend called ``name`` with its config ``options``."""
    return create_engine("TTS", __package__, _ENGINES, name, options)


__all__ = ["AudioChunk", "PhonemeSpan", "TTSEngine", "create_tts_engine"]
