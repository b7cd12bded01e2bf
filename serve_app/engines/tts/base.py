"""The TTS stage: text in, streamed PCM out, with phoneme timings when the engine has them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


@dataclass
class PhonemeSpan:
    """One phoneme and how many audio samples it lasts (at the chunk's sample rate)."""

    phoneme: str
    num_samples: int


@dataclass
class WordSpan:
    """A spoken word's place in a chunk, in samples from the chunk's start (edge-tts word
    boundaries). Spans may reach past the chunk; the mouth rests between two of them."""

    text: str
    start: int
    end: int


@dataclass
class AudioChunk:
    """A piece of synthesized speech.

    ``samples`` is mono int16. ``phonemes`` covers exactly ``len(samples)`` when present;
    it is None for engines that give no timings (lip-sync then falls back to the audio).
    ``words``: word timings where the engine has them instead (None: unknown).
    """

    samples: np.ndarray
    sample_rate: int
    phonemes: list[PhonemeSpan] | None = None
    text: str = ""
    words: list[WordSpan] | None = None

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
        words = self.words and [WordSpan(w.text, w.start - cut, w.end - cut) for w in self.words]
        return AudioChunk(self.samples[cut:], self.sample_rate, phonemes, self.text, words)


class VoiceStyle(BaseModel):
    """How a character speaks, whatever its voice's backend: each backend applies what it
    can (edge-tts all three; OpenAI, GPT-SoVITS, CosyVoice and Piper the rate, and the volume
    by scaling the samples)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate: float = Field(1.0, ge=0.5, le=2.0)  # speaking speed, 1 = the voice's own
    pitch_hz: int = Field(0, ge=-100, le=100)  # edge-tts only
    volume: float = Field(1.0, ge=0.0, le=2.0)  # loudness, 1 = as synthesized


DEFAULT_STYLE = VoiceStyle()


def scaled(samples: np.ndarray, volume: float) -> np.ndarray:
    """int16 samples at `volume` (clipped), for backends with no volume of their own."""
    if volume == 1.0:
        return samples
    return np.clip(samples.astype(np.float32) * volume, -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class Voice:
    """One voice an engine offers: its id (what characters and sessions name) and language."""

    id: str
    language: str | None = None


def chosen_voice(voice: str | None, configured, backend: str) -> str:
    """`voice`, or the first configured one when None; an unknown one is a ValueError."""
    name = voice or next(iter(configured))
    if name not in configured:
        raise ValueError(f"unknown {backend} voice {name!r}; configured: {list(configured)}")
    return name


class TTSUnavailable(RuntimeError):
    """A TTS backend failed or timed out; the message (for people) names it, never a key."""


class TTSEngine(Protocol):
    """Every TTS backend implements this; backends are chosen by name in config."""

    sample_rate: int

    def stream(self, text: str, voice: str | None = None,
               style: VoiceStyle = DEFAULT_STYLE) -> AsyncIterator[AudioChunk]:
        """Yield chunks of speech for ``text`` as soon as each is ready (``voice`` None: the
        engine's first). Failures raise TTSUnavailable with a message for people."""
        ...

    def voices(self) -> list[Voice]:
        """The voices accepted as ``voice``, the default first."""
        ...
