"""Whisper on a window that fits the utterance instead of a padded 30 s one.

Whisper's encoder always sees 30 s (3000 mel frames, 1500 positions): a 2 s question is 93 %
padding, and on a CPU encoding that padding is most of the transcription time. Encoding only
the utterance (plus a margin) is about 5x faster, but a decoder that sees nothing after the
speech does not end its text: tiny.en loops ("Yes. Yes. Yes."). So the decoder still gets
1500 positions: the utterance's own encoding, then the positions of a window of pure padding,
encoded once at start-up. It ends its text as it does on a full window.

The price is a little accuracy: the utterance's frames are encoded without attending to the
padding after them (bench/asr_window.py measures the word error rate both ways). A result
that looks wrong (it hit the token cap, or repeats itself) is redone on the full window.
"""
from __future__ import annotations

import math

import numpy as np

MARGIN_FRAMES = 100  # 1 s of features after the audio, as trailing silence
COMPRESSION_LIMIT = 2.4  # faster-whisper's own "this text repeats itself" threshold
NO_SPEECH_PROB = 0.6  # with LOGPROB_FLOOR: faster-whisper's "this was not speech" rule
LOGPROB_FLOOR = -1.0


class FittedWindow:
    """Transcribes with a fitted encoder window; `None` means "use the full window"."""

    def __init__(self, model) -> None:
        self._model = model
        self._frames = model.feature_extractor.nb_max_frames
        padding = np.zeros((model.model.n_mels, self._frames), np.float32)  # how faster-whisper pads
        self._padding = np.array(model.encode(padding))  # (1, positions, width)
        self._tokenizers: dict[str, tuple] = {}

    def _tokenizer(self, language: str) -> tuple:
        """(tokenizer, prompt, suppressed tokens) for `language`, made once."""
        if language not in self._tokenizers:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            model = self._model
            t = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, "transcribe", language)
            self._tokenizers[language] = (t, [*t.sot_sequence, t.no_timestamps],
                                          list(get_suppressed_tokens(t, [-1])))
        return self._tokenizers[language]

    def transcribe(self, audio: np.ndarray, language: str | None, beam_size: int) -> str | None:
        import ctranslate2
        from faster_whisper.transcribe import get_compression_ratio

        if language is None:
            if self._model.model.is_multilingual:
                return None  # language detection wants the full window
            language = "en"
        features = self._model.feature_extractor(audio)
        n = features.shape[-1]
        frames = 2 * math.ceil((n + MARGIN_FRAMES) / 2)  # two frames per encoder position
        if frames >= self._frames:
            return None
        window = np.zeros((features.shape[0], frames), np.float32)
        window[:, :n] = features
        encoding = self._padding.copy()
        encoding[:, : frames // 2] = np.array(self._model.encode(window))
        tokenizer, prompt, suppress = self._tokenizer(language)
        # Cap the text at a generous 8 tokens per second of audio: a loop stops early.
        cap = min(self._model.max_length - len(prompt), 16 + int(8 * len(audio) / 16000))
        result = self._model.model.generate(
            ctranslate2.StorageView.from_array(encoding),
            [prompt],
            beam_size=beam_size,
            max_length=len(prompt) + cap,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )[0]
        tokens = result.sequences_ids[0]
        text = tokenizer.decode([t for t in tokens if t < tokenizer.eot]).strip()
        if len(tokens) >= cap or get_compression_ratio(text) > COMPRESSION_LIMIT:
            return None
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOGPROB_FLOOR:
            return ""
        return text
