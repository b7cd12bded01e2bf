"""OpenAI's speech endpoint (`POST /v1/audio/speech`) and servers that copy it (Kokoro-FastAPI,
openedai-speech, LocalAI, ...), through the openai package, as streamed raw PCM.

`response_format: pcm` is 16-bit mono at 24 kHz on OpenAI; a compatible server that sends
another rate sets `sample_rate`. The key is read from the variable `api_key_env` names.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field

from ..openai_errors import describe, short
from .base import AudioChunk, DEFAULT_STYLE, TTSUnavailable, Voice, VoiceStyle, chosen_voice
from .remote import PcmChunks, RemoteOptions, within

_INSTALL = "pip install -e '.[voices]'"


class Options(RemoteOptions):
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini-tts"
    voices: list[str] = Field(default_factory=lambda: ["alloy"], min_length=1)  # the first is the default
    language: str | None = None  # for GET /api/voices
    api_key_env: str | None = "OPENAI_API_KEY"  # null: a local server without keys
    instructions: str | None = None  # how to speak (gpt-4o-mini-tts)
    sample_rate: int = Field(24000, ge=8000, le=96000)


class OpenAITTS:
    def __init__(self, **options: Any) -> None:
        try:
            from openai import AsyncOpenAI
        except ImportError as e:
            raise ImportError(f"The OpenAI TTS engine needs openai: {_INSTALL}") from e
        self.options = o = Options.model_validate(options)
        self._what = f"speech endpoint {o.base_url}"
        self._key_env = o.api_key_env
        if o.api_key_env:
            self._key = os.environ.get(o.api_key_env, "")
            if not self._key:
                raise TTSUnavailable(f"{self._what} needs an API key: set the environment variable "
                                     f"{o.api_key_env} (or api_key_env: null for a server without keys)")
        else:
            self._key = "no-key"  # local servers ignore it, but the client insists on one
        self._client = AsyncOpenAI(base_url=o.base_url, api_key=self._key, timeout=o.timeout_s, max_retries=0)
        self.sample_rate = o.sample_rate

    def voices(self) -> list[Voice]:
        return [Voice(name, self.options.language) for name in self.options.voices]

    async def stream(self, text: str, voice: str | None = None,
                     style: VoiceStyle = DEFAULT_STYLE) -> AsyncIterator[AudioChunk]:
        import openai

        o = self.options
        name = chosen_voice(voice, o.voices, "OpenAI")
        extra = {"instructions": o.instructions} if o.instructions else {}
        pcm = PcmChunks(o.sample_rate, style, text)
        try:
            async with self._client.audio.speech.with_streaming_response.create(
                model=o.model, voice=name, input=text, response_format="pcm", speed=style.rate, **extra,
            ) as response:
                async for data in within(response.iter_bytes(), o.timeout_s, self._what):
                    for chunk in pcm.push(data):
                        yield chunk
        except openai.OpenAIError as e:
            raise self._unavailable(e) from None
        except (TTSUnavailable, ValueError):
            raise
        except Exception as e:  # the transport's own errors (a connection dropped mid-answer)
            raise TTSUnavailable(f"{self._what} failed: {type(e).__name__}: {short(str(e))}") from None
        for chunk in pcm.flush():
            yield chunk

    def _unavailable(self, e: Exception) -> TTSUnavailable:
        o = self.options
        return TTSUnavailable(describe(e, self._what, o.timeout_s, self._key, self._key_env,
                                       f"has no model {o.model!r} or no speech API"))
