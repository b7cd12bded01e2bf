from __future__ import annotations

import numpy as np
import pytest

from serve_app.engines.audio import StreamResampler, to_int16


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _resample_all(x: np.ndarray, src: int, dst: int, chunk: int | None = None) -> np.ndarray:
    r = StreamResampler(src, dst)
    step = chunk or len(x)
    parts = [r.push(x[i : i + step]) for i in range(0, len(x), step)]
    return np.concatenate(parts + [r.flush()])


def test_sine_keeps_frequency_and_amplitude():
    y = _resample_all(_sine(1000, 22050, 1.0), 22050, 48000)
    assert y.dtype == np.float32
    core = y[2000:-2000]
    spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core))))
    peak_hz = np.fft.rfftfreq(len(core), 1 / 48000)[spectrum.argmax()]
    assert abs(peak_hz - 1000) < 5
    assert np.abs(core).max() == pytest.approx(0.5, abs=0.01)
    # No delay: the output lines up with the same sine sampled at 48 kHz.
    assert np.abs(y - _sine(1000, 48000, 1.0))[100:-100].max() < 1e-3


@pytest.mark.parametrize("src,dst", [(22050, 48000), (22050, 16000), (48000, 16000)])
def test_chunked_push_matches_one_push_and_length(src, dst):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(src * 2 + 123)).astype(np.float32)
    whole = _resample_all(x, src, dst)
    chunked = _resample_all(x, src, dst, chunk=441)
    assert abs(len(whole) - round(len(x) * dst / src)) <= 2
    assert len(chunked) == len(whole)
    assert np.abs(chunked - whole).max() < 1e-4


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    y = _resample_all(_sine(10_000, 48000, 0.5), 48000, 16000)
    assert np.abs(y[500:-500]).max() < 0.5 * 10 ** (-40 / 20)  # >= 40 dB down


def test_int16_input_and_to_int16():
    x = _sine(440, 22050, 0.2)
    as_int16 = (x * 32768).astype(np.int16)
    a = _resample_all(as_int16, 22050, 16000)
    b = _resample_all(as_int16.astype(np.float32) / 32768, 22050, 16000)
    assert np.array_equal(a, b)

    out = to_int16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32))
    assert out.dtype == np.int16
    assert out.tolist() == [-32767, -32767, 0, 16384, 32767, 32767]


def test_same_rate_passes_through():
    x = _sine(440, 16000, 0.1)
    r = StreamResampler(16000, 16000)
    y = r.push(x)
    assert np.array_equal(y, x) and y is not x
    assert len(r.flush()) == 0
