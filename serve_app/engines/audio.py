"""Streaming sample-rate conversion shared by the TTS, lip-sync and media paths."""
from __future__ import annotations

import av
import numpy as np


def to_float32(samples: np.ndarray) -> np.ndarray:
    """int16 or float mono samples as float32 in [-1, 1]."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    return np.asarray(samples, dtype=np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] as int16, clipping what is out of range."""
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)


class StreamResampler:
    """Resample a mono stream chunk by chunk without clicks at chunk joins.

    libswresample (through PyAV) keeps the filter history between pushes, so pushing a stream
    in pieces gives the same samples as pushing it whole. After ``flush()`` the total output is
    ``round(total_input * dst_rate / src_rate)`` samples, with no leading delay.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._resampler = (
            av.AudioResampler(format="flt", layout="mono", rate=dst_rate)
            if src_rate != dst_rate
            else None
        )

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next piece of the stream; returns float32 at ``dst_rate``."""
        x = to_float32(samples).reshape(-1)
        if self._resampler is None:
            return x.copy()
        if len(x) == 0:
            return np.zeros(0, np.float32)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = self.src_rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        """The samples still held in the filter; call once at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


# Containers an uploaded or named audio file may be in (by content, not by name).
AUDIO_CONTAINERS = {"wav", "mp3", "ogg", "flac", "aac", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}


class AudioDecodeError(ValueError):
    """An audio file we will not lip-sync; the message says why, for the person who sent it."""


def decode_audio(source: str | bytes, rate: int, max_s: float) -> np.ndarray:
    """An audio file (a path, or its bytes) as int16 mono at `rate`. Decoding stops as soon as
    it passes `max_s`, so a long (or lying) file costs no more than `max_s` of work."""
    import io

    try:
        container = av.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (av.error.FFmpegError, OSError, ValueError):
        raise AudioDecodeError("not an audio file (WAV, MP3, OGG, FLAC, AAC/M4A or WebM)") from None
    with container:
        if container.format.name not in AUDIO_CONTAINERS:
            raise AudioDecodeError(f"unsupported audio format {container.format.name!r}; use WAV, MP3, OGG, "
                                   "FLAC, AAC/M4A or WebM")
        if not container.streams.audio:
            raise AudioDecodeError("the file has no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        parts, total, limit = [], 0, int(max_s * rate)
        try:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                    total += len(parts[-1])
                if total > limit:
                    raise AudioDecodeError(f"the audio is longer than the {max_s:g} s limit")
            parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
        except av.error.FFmpegError:
            raise AudioDecodeError("the audio could not be decoded (a damaged file?)") from None
    audio = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    if not len(audio):
        raise AudioDecodeError("the audio is empty")
    return audio[:limit]
