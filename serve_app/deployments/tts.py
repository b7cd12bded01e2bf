"""TTS deployment: hosts the profile's TTS engines (serve_app/engines/tts/catalog.py) and
streams their chunks to session actors."""
from __future__ import annotations

from collections.abc import AsyncIterator

from ray import serve

from serve_app.config import TTSSettings
from serve_app.engines.tts import create_tts_engine
from serve_app.engines.tts.base import DEFAULT_STYLE, AudioChunk, VoiceStyle
from serve_app.engines.tts.catalog import VoiceCatalog


@serve.deployment(name="TTS")
class TTSDeployment:
    def __init__(self, settings: TTSSettings) -> None:
        engines = {name: (spec.backend, create_tts_engine(spec.backend, **spec.options))
                   for name, spec in settings.all_engines().items()}
        self.catalog = VoiceCatalog(engines, settings.fallback_engine(), settings.retry_after_s,
                                    settings.max_retry_after_s)

    async def stream(self, text: str, voice: str | None = None, style: VoiceStyle = DEFAULT_STYLE,
                     fallback: bool = False) -> AsyncIterator[AudioChunk]:
        # Called with handle.options(stream=True); cancelling the caller's generator cancels this.
        async for chunk in self.catalog.stream(text, voice, style, fallback):
            yield chunk

    def voices(self) -> list[dict]:
        return self.catalog.voices()

    def voice_ids(self) -> list[str]:
        return self.catalog.voice_ids()
