"""CosyVoice through its FastAPI server (runtime/python/fastapi/server.py).

A voice is either one of the model's own speakers (`spk_id`: POST /inference_sft) or a clone
of a reference clip (`prompt_wav` + `prompt_text`: POST /inference_zero_shot, the clip
uploaded with each request, as the server wants). The answer is raw PCM, streamed as the model
produces it: int16 from the plain endpoints, float32 from the `/stream/...` ones
(`stream: true`, where the server has them). Servers that announce their rate send
X-Custom-Header-sampleRate; otherwise `sample_rate` (CosyVoice 1: 22050, CosyVoice 2: 24000).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import AudioChunk, DEFAULT_STYLE, TTSUnavailable, Voice, VoiceStyle, chosen_voice
from .remote import PcmChunks, RemoteOptions, posted

RATE_HEADER = "X-Custom-Header-sampleRate"


class CosyVoiceVoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spk_id: str | None = None  # a speaker of the model (SFT), e.g. "中文女"
    prompt_wav: Path | None = None  # or a clip to clone (on this machine) ...
    prompt_text: str | None = None  # ... and the words said in it
    language: str | None = None  # for GET /api/voices

    @model_validator(mode="after")
    def _one_kind(self) -> "CosyVoiceVoice":
        if (self.spk_id is None) == (self.prompt_wav is None):
            raise ValueError("give spk_id (a model speaker) or prompt_wav + prompt_text (a clone), not both")
        if self.prompt_wav is not None and not self.prompt_text:
            raise ValueError("prompt_wav needs prompt_text: the words said in the clip")
        return self


class Options(RemoteOptions):
    base_url: str = "http://127.0.0.1:50000"
    voices: dict[str, CosyVoiceVoice] = Field(..., min_length=1)
    sample_rate: int = Field(22050, ge=8000, le=96000)
    stream: bool = False


class CosyVoiceTTS:
    def __init__(self, **options: Any) -> None:
        import httpx

        from serve_app.config import resolve

        self.options = Options.model_validate(options)
        self._what = f"CosyVoice at {self.options.base_url}"
        self._clips: dict[str, bytes] = {}
        for name, voice in self.options.voices.items():
            if voice.prompt_wav is not None:
                path = resolve(voice.prompt_wav)
                if not path.is_file():
                    raise FileNotFoundError(f"CosyVoice voice {name!r}: prompt_wav not found: {path}")
                self._clips[name] = path.read_bytes()
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.options.timeout_s))
        self.sample_rate = self.options.sample_rate

    def voices(self) -> list[Voice]:
        return [Voice(name, v.language) for name, v in self.options.voices.items()]

    async def stream(self, text: str, voice: str | None = None,
                     style: VoiceStyle = DEFAULT_STYLE) -> AsyncIterator[AudioChunk]:
        name = chosen_voice(voice, self.options.voices, "CosyVoice")
        spec = self.options.voices[name]
        prefix = "/stream" if self.options.stream else ""
        files = None
        if spec.spk_id is not None:
            url, form = f"{prefix}/inference_sft", {"tts_text": text, "spk_id": spec.spk_id}
        else:
            url, form = f"{prefix}/inference_zero_shot", {"tts_text": text, "prompt_text": spec.prompt_text}
            files = {"prompt_wav": (spec.prompt_wav.name, self._clips[name], "audio/wav")}

        def decoder(response: Any) -> PcmChunks:
            rate = self._rate(response.headers.get(RATE_HEADER))
            return PcmChunks(rate, style, text, "<f4" if self.options.stream else "<i2")

        async for chunk in posted(self._client, self.options.base_url.rstrip("/") + url, decoder, self._what,
                                  self.options.timeout_s, data=form, files=files):
            yield chunk

    def _rate(self, announced: str | None) -> int:
        if announced is None:
            return self.options.sample_rate
        try:
            return int(announced)
        except ValueError:
            raise TTSUnavailable(f"{self._what} announced a sample rate of {announced[:20]!r}") from None
