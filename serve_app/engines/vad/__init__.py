"""VAD backends by name, plus the utterance detector that runs on top of any of them.

Adding a backend is a module plus a line in ``_ENGINES``.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import SAMPLE_RATE, VADEngine
from .detector import SpeechEnd, SpeechStart, UtteranceDetector

# name -> (module in this package, class), imported on demand so that optional backends cost
# nothing until chosen
_ENGINES = {
    "silero": ("silero", "SileroVAD"),
    "energy": ("energy", "EnergyVAD"),
}


def create_vad_engine(name: str, **options: Any) -> VADEngine:
    """Build the VAD backend called ``name`` with its config ``options``."""
    if name not in _ENGINES:
        raise ValueError(f"Unknown VAD engine {name!r}; known engines: {sorted(_ENGINES)}")
    module, cls = _ENGINES[name]
    return getattr(import_module(f".{module}", __package__), cls)(**options)


__all__ = [
    "SAMPLE_RATE",
    "SpeechEnd",
    "SpeechStart",
    "UtteranceDetector",
    "VADEngine",
    "create_vad_engine",
]
