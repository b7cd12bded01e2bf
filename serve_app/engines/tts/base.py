"""The TTS stage: text in, streamed PCM out, with phoneme timings when the engine has them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol

import numpy as np


@dataclass
class PhonemeSpan:
    """One phoneme and how many audio samples it lasts (at the chunk's sample rate)."""

    phoneme: str
    num_samples: int


@dataclass
class AudioChunk:
    """A piece of synthesized speech.

    ``samples`` is mono int16. ``phonemes`` covers exactly ``len(samples)`` when present;
    it is None for engines that give no timings (lip-sync then falls back to the audio).
    """

    samples: np.ndarray
    sample_rate: int
    phonemes: list[PhonemeSpan] | None = None
    text: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


class TTSEngine(Protocol):
    """Every TTS backend implements this; backends are chosen by name in config."""

    sample_rate: int

    def stream(self, text: str, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """Yield chunks of speech for ``text`` as soon as each is ready."""
        ...

    def voices(self) -> list[str]:
        """Names accepted as ``voice``."""
        ...
