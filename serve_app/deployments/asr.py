"""ASR deployment: hosts one ASR engine; session actors send it each finished utterance."""
from __future__ import annotations

import numpy as np
from ray import serve

from serve_app.engines.asr import create_asr_engine
from serve_app.engines.asr.base import Transcript


@serve.deployment(name="ASR")
class ASRDeployment:
    def __init__(self, backend: str, options: dict) -> None:
        self.engine = create_asr_engine(backend, **options)

    async def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        return await self.engine.transcribe(audio, language)
