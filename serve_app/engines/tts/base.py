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

    def without_leading_silence(self, threshold: int = 200) -> "AudioChunk":
        """Drop the silence a chunk starts with (Piper opens every sentence with ~35 ms of it):
        worth it on the first chunk of a reply, where it is pure latency. Phoneme timings stay
        aligned: only the first span is shortened, so at most that span's samples go."""
        loud = np.flatnonzero(np.abs(self.samples.astype(np.int32)) > threshold)
        cut = int(loud[0]) if len(loud) else len(self.samples)
        phonemes = self.phonemes
        if phonemes:
            cut = min(cut, phonemes[0].num_samples)
            phonemes = [PhonemeSpan(phonemes[0].phoneme, phonemes[0].num_samples - cut), *phonemes[1:]]
        return AudioChunk(self.samples[cut:], self.sample_rate, phonemes, self.text)


class TTSEngine(Protocol):
    """Every TTS backend implements this; backends are chosen by name in config."""

    sample_rate: int

    def stream(self, text: str, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        """Yield chunks of speech for ``text`` as soon as each is ready."""
        ...

    def voices(self) -> list[str]:
        """Names accepted as ``voice``."""
        ...
