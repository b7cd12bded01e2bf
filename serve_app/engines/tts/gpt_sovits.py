"""GPT-SoVITS voice clones, through its `api_v2.py` server (`POST /tts`, streaming mode).

Each voice is a reference clip on the GPT-SoVITS machine (`ref_audio_path` is read there),
the words said in it (`prompt_text`, `prompt_lang`) and the language to speak (`text_lang`).
With media_type `wav` the stream starts with a WAV header that gives the sample rate; with
`raw` there is none, so `sample_rate` must be the model's (v2: 32000, v3: 24000, v4: 48000).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .base import AudioChunk, DEFAULT_STYLE, Voice, VoiceStyle, chosen_voice
from .remote import PcmChunks, RemoteOptions, WavStream, posted


class SovitsVoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref_audio_path: str = Field(..., min_length=1)
    prompt_text: str = ""
    prompt_lang: str = "zh"
    text_lang: str = "zh"
    aux_ref_audio_paths: list[str] = Field(default_factory=list)


class Options(RemoteOptions):
    base_url: str = "http://127.0.0.1:9880"
    voices: dict[str, SovitsVoice] = Field(..., min_length=1)  # voice id -> reference; first = default
    media_type: Literal["wav", "raw"] = "wav"
    sample_rate: int = Field(32000, ge=8000, le=96000)  # raw only
    # 1/True: whole fragments (best quality); 2: medium; 3: fastest first audio (api_v2's codes)
    streaming_mode: bool | int = Field(True, ge=0, le=3)
    text_split_method: str = "cut5"
    extra: dict[str, Any] = Field(default_factory=dict)  # more /tts fields: top_k, temperature, seed...


class GPTSoVITSTTS:
    def __init__(self, **options: Any) -> None:
        import httpx

        self.options = Options.model_validate(options)
        self.url = self.options.base_url.rstrip("/") + "/tts"
        self._what = f"GPT-SoVITS at {self.options.base_url}"
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.options.timeout_s))
        self.sample_rate = self.options.sample_rate

    def voices(self) -> list[Voice]:
        return [Voice(name, v.text_lang) for name, v in self.options.voices.items()]

    def request(self, text: str, voice: str | None, style: VoiceStyle) -> dict[str, Any]:
        """The /tts body for `text` in `voice`."""
        name = chosen_voice(voice, self.options.voices, "GPT-SoVITS")
        return {
            **self.options.extra,
            **self.options.voices[name].model_dump(),
            "text": text,
            "text_split_method": self.options.text_split_method,
            "media_type": self.options.media_type,
            "streaming_mode": self.options.streaming_mode,
            "speed_factor": style.rate,
        }

    async def stream(self, text: str, voice: str | None = None,
                     style: VoiceStyle = DEFAULT_STYLE) -> AsyncIterator[AudioChunk]:
        body = self.request(text, voice, style)
        decoder = (WavStream(style, text, self._what) if self.options.media_type == "wav"
                   else PcmChunks(self.options.sample_rate, style, text))
        async for chunk in posted(self._client, self.url, lambda _: decoder, self._what, self.options.timeout_s,
                                  json=body):
            yield chunk
