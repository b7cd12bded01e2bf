"""A loudness gate posing as a VAD: no model, no dependencies.

It cannot tell speech from any other sound of the same level (noise, music, a slammed door), so
it suits tests and quiet rooms; use Silero for real microphones.
"""
from __future__ import annotations

import math

import numpy as np

_SLOPE_DB = 3.0  # dB per e-fold of the odds: p goes from 0.12 to 0.88 over threshold -6..+6 dB


class EnergyVAD:
    """Frame RMS level in dBFS mapped through a logistic curve; p = 0.5 at ``threshold_db``."""

    frame_samples = 512  # 32 ms, the same framing as Silero

    def __init__(self, threshold_db: float = -40.0) -> None:
        self.threshold_db = threshold_db

    def probability(self, frame: np.ndarray) -> float:
        x = np.asarray(frame, dtype=np.float32)
        rms = math.sqrt(float(np.mean(x * x))) if len(x) else 0.0
        level_db = 20.0 * math.log10(max(rms, 1e-10))
        return 1.0 / (1.0 + math.exp(-(level_db - self.threshold_db) / _SLOPE_DB))

    def reset(self) -> None:
        """Stateless: nothing to forget."""
