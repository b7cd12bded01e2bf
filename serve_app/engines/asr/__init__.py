"""ASR backends by name; adding one is a module plus a line in ``_ENGINES``."""
from __future__ import annotations

from typing import Any

from ..registry import create_engine
from .base import SAMPLE_RATE, ASREngine, ASRUnavailable, Transcript

_ENGINES = {
    "whisper": ("whisper", "FasterWhisperASR"),
    "funasr": ("funasr_local", "FunASRLocal"),
    "funasr_server": ("funasr_server", "FunASRServerClient"),
}


def create_asr_engine(name: str, **options: Any) -> ASREngine:
    """Build the ASR backend called ``name`` with its config ``options``."""
    return create_engine("ASR", __package__, _ENGINES, name, options)


__all__ = ["SAMPLE_RATE", "ASREngine", "ASRUnavailable", "Transcript", "create_asr_engine"]
