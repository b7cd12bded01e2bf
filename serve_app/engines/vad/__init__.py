"""VAD backends by name, plus the utterance detector that runs on top of any of them.

Adding a backend is a module plus a line in ``_ENGINES``.
"""
from __future__ import annotations

from typing import Any

from ..registry import create_engine
from .base import SAMPLE_RATE, VADEngine
from .detector import SpeechEnd, SpeechStart, UtteranceDetector

_ENGINES = {
    "silero": ("silero", "SileroVAD"),
    "energy": ("energy", "EnergyVAD"),
}


def create_vad_engine(name: str, **options: Any) -> VADEngine:
    """Build the VAD backend called ``name`` with its config ``options``."""
    return create_engine("VAD", __package__, _ENGINES, name, options)


__all__ = [
    "SAMPLE_RATE",
    "SpeechEnd",
    "SpeechStart",
    "UtteranceDetector",
    "VADEngine",
    "create_vad_engine",
]
