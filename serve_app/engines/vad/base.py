"""The VAD stage: 16 kHz audio frames in, speech probability out."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from serve_app.engines.media import SPEECH_RATE as SAMPLE_RATE  # noqa: F401 (the VAD's input rate)


class VADEngine(Protocol):
    """Every VAD backend implements this; backends are chosen by name in config."""

    frame_samples: int  # samples per `probability` call at 16 kHz

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability in [0, 1] of one float32 frame of `frame_samples` samples."""
        ...

    def reset(self) -> None:
        """Forget the recurrent state (new stream)."""
        ...
