"""TTS backends by name; adding one is a module plus a line in ``_ENGINES``."""
from __future__ import annotations

import inspect
from importlib import import_module
from typing import Any

from pydantic import ValidationError

from ..registry import create_engine
from .base import AudioChunk, PhonemeSpan, TTSEngine, TTSUnavailable, Voice, VoiceStyle

_ENGINES = {
    "piper": ("piper_tts", "PiperTTS"),
    "edge": ("edge", "EdgeTTS"),
    "openai": ("openai_tts", "OpenAITTS"),
    "gpt_sovits": ("gpt_sovits", "GPTSoVITSTTS"),
    "cosyvoice": ("cosyvoice", "CosyVoiceTTS"),
}


def create_tts_engine(name: str, **options: Any) -> TTSEngine:
    """Build the TTS backend called ``name`` with its config ``options``."""
    return create_engine("TTS", __package__, _ENGINES, name, options)


def check_tts_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError naming the field when ``options`` do not fit backend ``name``: at
    config load, before any replica starts. Modules import without their backend's package."""
    if name not in _ENGINES:
        raise ValueError(f"unknown TTS backend {name!r}; known: {sorted(_ENGINES)}")
    module_name, cls_name = _ENGINES[name]
    module = import_module(f".{module_name}", __package__)
    model = getattr(module, "Options", None)
    if model is not None:
        try:
            model.model_validate(options)
        except ValidationError as exc:
            problems = "; ".join(
                f"options.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
            raise ValueError(f"TTS backend {name!r}: {problems}") from None
        return
    accepted = set(inspect.signature(getattr(module, cls_name)).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"TTS backend {name!r}: unknown options {unknown}; it takes {sorted(accepted)}")


__all__ = ["AudioChunk", "PhonemeSpan", "TTSEngine", "TTSUnavailable", "Voice", "VoiceStyle",
           "check_tts_options", "create_tts_engine"]
