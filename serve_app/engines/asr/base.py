"""The ASR stage: one utterance of 16 kHz audio in, its text out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from serve_app.engines.media import SPEECH_RATE as SAMPLE_RATE  # noqa: F401 (the ASR's input rate)


class ASRUnavailable(RuntimeError):
    """The backend cannot transcribe (missing model, unreachable server); the message says why."""


@dataclass
class Transcript:
    text: str
    language: str | None = None
    duration_s: float = 0.0


class ASREngine(Protocol):
    """Every ASR backend implements this; backends are chosen by name in config."""

    async def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        """Transcribe float32 mono 16 kHz audio. Raises ASRUnavailable when the backend can't."""
        ...
