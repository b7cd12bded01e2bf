"""AudioChunk.without_leading_silence keeps the phoneme timings aligned with the audio."""
from __future__ import annotations

import numpy as np

from serve_app.engines.tts.base import AudioChunk, PhonemeSpan


def chunk(lead: int, phonemes: list[PhonemeSpan] | None) -> AudioChunk:
    samples = np.concatenate([np.zeros(lead, np.int16), np.full(1000, 3000, np.int16)])
    return AudioChunk(samples, 22050, phonemes)


def test_cuts_the_silence_inside_the_first_span():
    trimmed = chunk(800, [PhonemeSpan("^", 900), PhonemeSpan("h", 900)]).without_leading_silence()
    assert len(trimmed.samples) == 1000 and trimmed.samples[0] == 3000
    assert [(p.phoneme, p.num_samples) for p in trimmed.phonemes] == [("^", 100), ("h", 900)]
    assert sum(p.num_samples for p in trimmed.phonemes) == len(trimmed.samples)


def test_never_cuts_past_the_first_span():
    trimmed = chunk(800, [PhonemeSpan("^", 300), PhonemeSpan("h", 1500)]).without_leading_silence()
    assert len(trimmed.samples) == 1500  # only the 300 silent samples of "^" went
    assert trimmed.phonemes[0].num_samples == 0
    assert sum(p.num_samples for p in trimmed.phonemes) == len(trimmed.samples)


def test_without_timings_all_leading_silence_goes():
    trimmed = chunk(800, None).without_leading_silence()
    assert len(trimmed.samples) == 1000 and trimmed.phonemes is None
