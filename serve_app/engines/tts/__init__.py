"""TTS backends by name; adding one is a module plus a line in ``_ENGINES``."""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import AudioChunk, PhonemeSpan, TTSEngine

# name -> (module in this package, class), imported on demand so that optional backends cost
# nothing until chosen
_ENGINES = {
    "piper": ("piper_tts", "PiperTTS"),
}


def create_tts_engine(name: str, **options: Any) -> TTSEngine:
    """Build the TTS backend called ``name`` with its config ``options``."""
    if name not in _ENGINES:
        raise ValueError(f"Unknown TTS engine {name!r}; known engines: {sorted(_ENGINES)}")
    module, cls = _ENGINES[name]
    return getattr(import_module(f".{module}", __package__), cls)(**options)


__all__ = ["AudioChunk", "PhonemeSpan", "TTSEngine", "create_tts_engine"]
