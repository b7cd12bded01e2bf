"""ASR backends by name; adding one is a module plus a line in ``_ENGINES``."""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import SAMPLE_RATE, ASREngine, ASRUnavailable, Transcript

# name -> (module in this package, class), imported on demand so that optional backends cost
# nothing until chosen
_ENGINES = {
    "whisper": ("whisper", "FasterWhisperASR"),
    "funasr": ("funasr_local", "FunASRLocal"),
    "funasr_server": ("funasr_server", "FunASRServerClient"),
}


def create_asr_engine(name: str, **options: Any) -> ASREngine:
    """Build the ASR backend called ``name`` with its config ``options``."""
    if name not in _ENGINES:
        raise ValueError(f"Unknown ASR engine {name!r}; known engines: {sorted(_ENGINES)}")
    module, cls = _ENGINES[name]
    return getattr(import_module(f".{module}", __package__), cls)(**options)


__all__ = ["SAMPLE_RATE", "ASREngine", "ASRUnavailable", "Transcript", "create_asr_engine"]
