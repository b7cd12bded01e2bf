"""Wav2Lip's audio front end (log-mel spectrogram), in numpy, for whole replies and for chunks.

The published recipe (Rudrabha/Wav2Lip ``audio.py`` / ``hparams.py``), 16 kHz mono audio:

* pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` with ``y[0] = x[0]`` (``lfilter([1, -0.97], [1], x)``);
* STFT as ``librosa.stft(y, n_fft=800, hop_length=200, win_length=800, center=True)``: periodic Hann
  window, frame ``m`` centred on sample ``m * 200``. Centre padding is REFLECT: Wav2Lip was built on
  librosa 0.7, whose ``stft`` padded with ``mode="reflect"``; librosa >= 0.10 defaults to
  ``pad_mode="constant"`` (zeros), which changes the first and last two columns. We follow the
  original (reflect), which is what the released checkpoints were trained on;
* magnitude ``|STFT|`` (not power), 80 Slaney mel bands 55-7600 Hz with Slaney area normalisation
  (``librosa.filters.mel(htk=False, norm="slaney")``, same as the old ``norm=1``);
* ``20 log10(max(1e-5, mel)) - 20`` dB, then ``clip(8 (dB + 100) / 100 - 4, -4, 4)``.

Output: float32 ``(80, T)`` with ``T = 1 + len(audio) // 200`` (80 columns per second).

Video frame ``i`` at ``fps`` uses columns ``[int(i * 80 / fps), +16)`` (Wav2Lip's
``int(i * (80. / fps))``); when that runs past the end the last 16 columns are used, as Wav2Lip does
for its final frame. Replies shorter than 16 columns (< 0.19 s) are left-padded with silence (-4).

Streaming: :func:`mel_windows` computes the windows of a few video frames from only a segment of the
reply, bit-for-bit the computation the whole reply would get (same frames, same reflect padding at
the reply's start and end). :func:`required_span` says which samples a chunk needs and
:data:`LOOKAHEAD_FRAMES` how many video frames of audio must have arrived past a chunk's last frame.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from serve_app.engines.media import SPEECH_RATE as SAMPLE_RATE

N_FFT = 800
HOP = 200
WIN_LENGTH = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_STEP = 16  # mel columns per video frame's window (200 ms)
MEL_PER_SECOND = SAMPLE_RATE / HOP  # 80.0

_HALF = N_FFT // 2
_AMP_FLOOR = 10.0 ** (MIN_LEVEL_DB / 20.0)  # 1e-5
_SILENCE = -MAX_ABS_VALUE


# --------------------------------------------------------------------------- filter bank
# Slaney's auditory-toolbox scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """(80, 401) float64 triangular Slaney mel filters (area-normalised), as librosa.filters.mel
    (sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, htk=False, norm="slaney"). Read-only."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, 1 + N_FFT // 2)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(WIN_LENGTH)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WIN_LENGTH)  # periodic Hann (fftbins=True)
    w.setflags(write=False)
    return w


# --------------------------------------------------------------------------- indexing
def n_columns(n_samples: int) -> int:
    """Mel columns of a reply of ``n_samples`` samples: ``1 + n_samples // 200``."""
    return 1 + int(n_samples) // HOP


def window_start(frame: int, fps: int = 25) -> int:
    """First mel column of video frame ``frame`` (before the end-of-audio clamp), as Wav2Lip:
    ``int(frame * (80. / fps))``."""
    return int(frame * (MEL_PER_SECOND / fps))


def _window_starts(first_frame: int, n_frames: int, fps: int, n_cols: int | None) -> np.ndarray:
    starts = np.array([window_start(i, fps) for i in range(first_frame, first_frame + n_frames)],
                      dtype=np.int64)
    if n_cols is not None:
        starts = np.where(starts + MEL_STEP > n_cols, n_cols - MEL_STEP, starts)
    return starts


def _column_range(first_frame: int, n_frames: int, fps: int,
                  total_samples: int | None) -> tuple[np.ndarray, int, int]:
    """(window starts, c0, c1): the frames' window starts and the mel columns [c0, c1) they read."""
    n_cols = None if total_samples is None else n_columns(total_samples)
    starts = _window_starts(first_frame, n_frames, fps, n_cols)
    c0 = max(int(starts.min()), 0)
    c1 = int(starts.max()) + MEL_STEP
    return starts, c0, (c1 if n_cols is None else min(c1, n_cols))


def _source_index(idx: np.ndarray, total: int | None) -> np.ndarray:
    """Map global sample positions (may lie outside the reply) to the reply sample whose value the
    centre-padded signal holds there: reflect about sample 0 and, when the length is known, about
    the last sample (repeatedly, as ``np.pad(mode="reflect")`` does for very short signals)."""
    if total is None:
        return np.abs(idx)
    if total <= 1:
        return np.zeros_like(idx)
    period = 2 * (total - 1)
    r = np.mod(idx, period)
    return np.where(r >= total, period - r, r)


def _needed(c0: int, c1: int, total: int | None) -> tuple[int, int]:
    """[lo, hi) of pre-emphasised samples that STFT frames [c0, c1) read."""
    if c1 <= c0:
        return 0, 0
    lo_pos, hi_pos = c0 * HOP - _HALF, (c1 - 1) * HOP + _HALF  # positions [lo_pos, hi_pos)
    if total is not None and total <= 0:
        return 0, 0
    if lo_pos >= 0 and (total is None or hi_pos <= total):
        return lo_pos, hi_pos
    src = _source_index(np.arange(lo_pos, hi_pos), total)
    return int(src.min()), int(src.max()) + 1


def _raw_span(lo: int, hi: int) -> tuple[int, int]:
    """Raw samples needed to pre-emphasise samples [lo, hi): one more before, except at 0."""
    if hi <= lo:
        return 0, 0
    return max(lo - 1, 0), hi


def required_span(first_frame: int, n_frames: int, fps: int = 25, *,
                  total_samples: int | None = None) -> tuple[int, int]:
    """[start, end) of reply samples that :func:`mel_windows` needs for video frames
    ``[first_frame, first_frame + n_frames)`` (clipped at 0). Without ``total_samples`` the reply is
    assumed to go on past the chunk; with it (the last chunk) the end clamp and end reflection are
    taken into account and ``end <= total_samples``."""
    if n_frames <= 0:
        return 0, 0
    _, c0, c1 = _column_range(first_frame, n_frames, fps, total_samples)
    return _raw_span(*_needed(c0, c1, total_samples))


def lookahead_frames(fps: int = 25) -> int:
    """Whole video frames of audio needed after the end of a chunk's last frame: frame ``i``'s window
    reads samples up to ``(start_i + 15) * 200 + 400``, up to 225 ms past the frame's start."""
    per_frame = SAMPLE_RATE / fps
    worst = 0
    for i in range(20 * fps):  # the start pattern repeats every fps / gcd(80, fps) frames
        _, end = required_span(i, 1, fps)
        worst = max(worst, math.ceil((end - (i + 1) * per_frame) / per_frame - 1e-9))
    return worst


LOOKAHEAD_FRAMES = lookahead_frames(25)
assert LOOKAHEAD_FRAMES == 5, LOOKAHEAD_FRAMES  # 16 columns + half an FFT = 225 ms past the frame start


# --------------------------------------------------------------------------- spectrogram
def _preemphasis(segment: np.ndarray, at_start: bool) -> np.ndarray:
    """Pre-emphasised samples of ``segment``; when the segment does not start the reply its first
    sample only serves as the predecessor and the result is one shorter."""
    x = np.asarray(segment, dtype=np.float64).reshape(-1)
    y = x[1:] - PREEMPHASIS * x[:-1]
    return np.concatenate([x[:1], y]) if at_start else y


def _columns(y: np.ndarray, y_start: int, c0: int, c1: int, total: int | None) -> np.ndarray:
    """Normalised mel columns [c0, c1) (float32, (80, c1 - c0)) from pre-emphasised samples
    ``y`` = global samples [y_start, y_start + len(y))."""
    if c1 <= c0:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    if total is not None and total <= 0:
        return np.full((N_MELS, c1 - c0), _SILENCE, dtype=np.float32)
    pos = (np.arange(c0, c1) * HOP - _HALF)[:, None] + np.arange(N_FFT)[None, :]
    frames = y[_source_index(pos, total) - y_start]
    spec = np.abs(np.fft.rfft(frames * _window(), axis=1))  # (n, 401)
    mel = mel_basis() @ spec.T
    db = 20.0 * np.log10(np.maximum(_AMP_FLOOR, mel)) - REF_LEVEL_DB
    norm = (2.0 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised log-mel spectrogram of a whole 16 kHz utterance: float32 (80, T),
    T = 1 + len(audio) // 200, values in [-4, 4]."""
    x = np.asarray(audio).reshape(-1)
    total = len(x)
    return _columns(_preemphasis(x, at_start=True), 0, 0, n_columns(total), total)


def windows(mel: np.ndarray, first_frame: int = 0, n_frames: int | None = None,
            fps: int = 25) -> np.ndarray:
    """(n_frames, 80, 16) float32 windows of video frames from a whole spectrogram ``mel`` (80, T).
    Default ``n_frames``: Wav2Lip's count (frames whose window fits, plus one clamped final frame)."""
    n_cols = mel.shape[1]
    if n_frames is None:
        n_frames = wav2lip_frame_count(n_cols, fps) - first_frame
    starts = _window_starts(first_frame, max(n_frames, 0), fps, n_cols)
    padded = np.concatenate([np.full((N_MELS, MEL_STEP), _SILENCE, dtype=np.float32),
                             mel.astype(np.float32, copy=False)], axis=1)
    cols = starts[:, None] + MEL_STEP + np.arange(MEL_STEP)[None, :]  # (n, 16) into `padded`
    return np.ascontiguousarray(padded[:, cols].transpose(1, 0, 2))


def wav2lip_frame_count(n_cols: int, fps: int = 25) -> int:
    """Video frames Wav2Lip's inference makes from ``n_cols`` mel columns: every frame whose window
    fits, plus one final frame using the last 16 columns."""
    i = 0
    while window_start(i, fps) + MEL_STEP <= n_cols:
        i += 1
    return i + 1


def mel_windows(segment: np.ndarray, *, offset: int, first_frame: int, n_frames: int,
                total_samples: int | None, fps: int = 25) -> np.ndarray:
    """(n_frames, 80, 16) float32 mel windows of video frames ``[first_frame, first_frame + n_frames)``
    computed from a segment of the reply, equal to ``windows(log_mel(whole_reply), ...)``.

    ``segment`` holds reply samples ``[offset, offset + len(segment))``; ``total_samples`` is the
    reply's full length when known (last chunk), else None (more audio follows). Only the STFT
    frames the windows use are computed. Raises ValueError naming the sample range needed when the
    segment does not cover it (see :func:`required_span`)."""
    seg = np.asarray(segment).reshape(-1)
    if offset < 0:
        raise ValueError(f"mel_windows: offset must be >= 0, got {offset}")
    seg_end = offset + len(seg)
    if total_samples is not None and seg_end > total_samples:
        raise ValueError(f"mel_windows: the segment [{offset}, {seg_end}) runs past the reply's end "
                         f"({total_samples} samples)")
    if n_frames <= 0:
        return np.zeros((0, N_MELS, MEL_STEP), dtype=np.float32)
    starts, c0, c1 = _column_range(first_frame, n_frames, fps, total_samples)
    lo, hi = _needed(c0, c1, total_samples)
    y_start = offset if offset == 0 else offset + 1
    if hi > lo and (lo < y_start or hi > seg_end):
        need0, need1 = _raw_span(lo, hi)
        more = " (more audio, or total_samples if the reply has ended)" if hi > seg_end else ""
        raise ValueError(f"mel_windows: video frames [{first_frame}, {first_frame + n_frames}) need reply "
                         f"samples [{need0}, {need1}) but the segment holds [{offset}, {seg_end}){more}")
    cols = _columns(_preemphasis(seg, at_start=offset == 0), y_start, c0, c1, total_samples)
    padded = np.concatenate([np.full((N_MELS, MEL_STEP), _SILENCE, dtype=np.float32), cols], axis=1)
    idx = (starts - c0 + MEL_STEP)[:, None] + np.arange(MEL_STEP)[None, :]
    # columns < 0 (replies shorter than 16 columns) are silence: they index the padding, as c0 == 0
    return np.ascontiguousarray(padded[:, idx].transpose(1, 0, 2))
