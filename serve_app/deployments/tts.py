"""TTS deployment: hosts one TTS engine and streams its chunks to session actors."""
from __future__ import annotations

from collections.abc import AsyncIterator

from ray import serve

from serve_app.engines.tts import create_tts_engine
from serve_app.engines.tts.base import AudioChunk


@serve.deployment(name="TTS")
class TTSDeployment:
    def __init__(self, backend: str, options: dict) -> None:
        self.engine = create_tts_engine(backend, **options)

    async def stream(self, text: str, voice: str | None = None) -> AsyncIterator[AudioChunk]:
        # Called with handle.options(stream=True); cancelling the caller's generator cancels this.
        async for chunk in self.engine.stream(text, voice):
            yield chunk

    def voices(self) -> list[str]:
        return self.engine.voices()
