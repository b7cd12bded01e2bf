from __future__ import annotations

import numpy as np
import pytest

from serve_app.engines.lipsync.neural import mel as M

SR = 16000


def _speechlike(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """A Piper-like test signal: gliding harmonic 'voice', noise bursts, pauses; float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    f0 = 110 + 60 * np.sin(2 * np.pi * 0.7 * t) + 40 * t
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voice = sum((0.5 / k) * np.sin(k * phase) for k in range(1, 12))
    chirp = 0.2 * np.sin(2 * np.pi * (300 * t + 900 * t**2))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t) ** 2
    noise = 0.05 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 1.1 * t) > 0.6)
    x = 0.4 * envelope * (voice + chirp) + noise
    x[int(0.9 * SR):int(1.2 * SR)] = 0.0  # a pause
    return x.astype(np.float32)


# ------------------------------------------------------------------ independent float64 reference
def _ref_mel_filters(sr=16000, n_fft=800, n_mels=80, fmin=55.0, fmax=7600.0) -> np.ndarray:
    def to_mel(f):  # Slaney: 3 mels per 200 Hz below 1 kHz, 27 mels per factor 6.4 above
        return 3.0 * f / 200.0 if f < 1000.0 else 15.0 + 27.0 * np.log(f / 1000.0) / np.log(6.4)

    def to_hz(m):
        return 200.0 * m / 3.0 if m < 15.0 else 1000.0 * 6.4 ** ((m - 15.0) / 27.0)

    mels = np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2)
    hz = np.array([to_hz(m) for m in mels])
    bins = np.arange(n_fft // 2 + 1) * sr / n_fft
    filters = np.zeros((n_mels, len(bins)))
    for b in range(n_mels):
        left, centre, right = hz[b], hz[b + 1], hz[b + 2]
        for k, f in enumerate(bins):
            if left < f <= centre:
                filters[b, k] = (f - left) / (centre - left)
            elif centre < f < right:
                filters[b, k] = (right - f) / (right - centre)
        filters[b] *= 2.0 / (right - left)  # unit area (Slaney normalisation)
    return filters


def _ref_log_mel(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    y = np.empty_like(x)
    y[0] = x[0]
    for n in range(1, len(x)):  # pre-emphasis, written out
        y[n] = x[n] - 0.97 * x[n - 1]
    padded = np.pad(y, 400, mode="reflect")
    n_frames = 1 + (len(padded) - 800) // 200
    w = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / 800) for n in range(800)])
    k = np.arange(401)[:, None]
    n = np.arange(800)[None, :]
    dft = np.exp(-2j * np.pi * k * n / 800)  # explicit DFT matrix (401, 800)
    frames = np.stack([padded[m * 200:m * 200 + 800] * w for m in range(n_frames)], axis=1)
    mag = np.abs(dft @ frames)
    mel = _ref_mel_filters() @ mag
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return _speechlike(3.0)


@pytest.fixture(scope="module")
def whole(audio) -> np.ndarray:
    return M.log_mel(audio)


def test_matches_reference_formula(audio, whole):
    ref = _ref_log_mel(audio)
    assert whole.shape == ref.shape == (80, 1 + len(audio) // 200)
    assert whole.dtype == np.float32
    assert np.abs(whole - ref).max() < 1e-3
    assert whole.min() >= -4 and whole.max() <= 4
    assert whole.std() > 0.5  # a real spectrogram, not saturated


def test_filter_bank_matches_reference():
    assert np.abs(M.mel_basis() - _ref_mel_filters()).max() < 1e-9
    assert M.mel_basis() is M.mel_basis()


@pytest.mark.parametrize("n", [0, 1, 199, 200, 401, 799, 1000, 3001])
def test_shapes_and_short_audio(n):
    x = _speechlike(1.0, seed=n)[:n]
    out = M.log_mel(x)
    assert out.shape == (80, 1 + n // 200) and out.dtype == np.float32
    if n > 400:
        assert np.abs(out - _ref_log_mel(x)).max() < 1e-3


def test_silence_is_minus_four():
    out = M.log_mel(np.zeros(16000, dtype=np.float32))
    assert np.all(out == -4.0)


def test_constants():
    assert (M.SAMPLE_RATE, M.N_FFT, M.HOP, M.N_MELS, M.MEL_STEP) == (16000, 800, 200, 80, 16)
    assert M.LOOKAHEAD_FRAMES == 5


def test_window_indexing(whole):
    t = whole.shape[1]
    w = M.windows(whole, 0, 30)
    assert w.shape == (30, 80, 16) and w.dtype == np.float32
    for i in range(30):
        start = int(80.0 / 25 * i)
        assert start == (80 * i) // 25
        np.testing.assert_array_equal(w[i], whole[:, start:start + 16])
    # the end case: frames whose window would run past T use the last 16 columns
    n = M.wav2lip_frame_count(t)
    assert int(3.2 * (n - 2)) + 16 <= t < int(3.2 * (n - 1)) + 16
    tail = M.windows(whole, n - 3, 5)
    np.testing.assert_array_equal(tail[0], whole[:, int(3.2 * (n - 3)):int(3.2 * (n - 3)) + 16])
    for k in (2, 3, 4):
        np.testing.assert_array_equal(tail[k], whole[:, t - 16:])
    assert M.windows(whole).shape[0] == n


def test_short_reply_windows_padded_with_silence():
    x = _speechlike(0.5)[:1000]  # 6 columns
    mel = M.log_mel(x)
    w = M.windows(mel, 0, 2)
    assert np.all(w[:, :, :10] == -4.0)
    np.testing.assert_array_equal(w[0, :, 10:], mel)
    got = M.mel_windows(x, offset=0, first_frame=0, n_frames=2, total_samples=len(x))
    np.testing.assert_allclose(got, w, atol=1e-6, rtol=0)


def test_lookahead_is_enough():
    """Every frame's window ends within LOOKAHEAD_FRAMES video frames past the frame's end, and
    one frame less would not be enough for some frame."""
    per = SR // 25
    ends = [M.required_span(i, 1)[1] - (i + 1) * per for i in range(200)]
    assert max(ends) <= M.LOOKAHEAD_FRAMES * per
    assert max(ends) > (M.LOOKAHEAD_FRAMES - 1) * per


def _chunked(audio: np.ndarray, chunk: int, *, slack: int = 0) -> np.ndarray:
    """Windows of every video frame, each chunk computed from exactly its required span
    (plus `slack` samples either side); the last chunk knows the reply's length."""
    total = len(audio)
    n_total = M.wav2lip_frame_count(M.n_columns(total))
    out = []
    for first in range(0, n_total, chunk):
        n = min(chunk, n_total - first)
        last = first + n >= n_total - M.LOOKAHEAD_FRAMES
        known = total if last else None
        start, end = M.required_span(first, n, total_samples=known)
        start = max(start - slack, 0)
        end = min(end + slack, total)
        if not last:
            assert end <= total
        out.append(M.mel_windows(audio[start:end], offset=start, first_frame=first, n_frames=n,
                                 total_samples=known))
    return np.concatenate(out)


@pytest.mark.parametrize("chunk", [1, 5, 7])
def test_streaming_equals_whole(audio, whole, chunk):
    ref = M.windows(whole)
    got = _chunked(audio, chunk)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_streaming_with_extra_context(audio, whole):
    np.testing.assert_allclose(_chunked(audio, 4, slack=333), M.windows(whole), atol=1e-6, rtol=0)


def test_streaming_tail_odd_length():
    x = _speechlike(1.3, seed=3)[:20777]  # not a multiple of the hop: end reflection inside frames
    mel = M.log_mel(x)
    np.testing.assert_allclose(_chunked(x, 3), M.windows(mel), atol=1e-6, rtol=0)


def test_segment_too_short_raises(audio):
    start, end = M.required_span(10, 5)
    assert 0 < start < end
    with pytest.raises(ValueError, match=rf"samples \[{start}, {end}\)"):
        M.mel_windows(audio[start + 1:end], offset=start + 1, first_frame=10, n_frames=5,
                      total_samples=None)
    with pytest.raises(ValueError, match="more audio"):
        M.mel_windows(audio[start:end - 1], offset=start, first_frame=10, n_frames=5, total_samples=None)
    # not knowing the end: the last frames need audio past it
    n = M.wav2lip_frame_count(M.n_columns(len(audio)))
    with pytest.raises(ValueError):
        M.mel_windows(audio, offset=0, first_frame=n - 2, n_frames=2, total_samples=None)
    ok = M.mel_windows(audio[start:end], offset=start, first_frame=10, n_frames=5, total_samples=None)
    assert ok.shape == (5, 80, 16)
