"""What the TTS backends that call a server share: their options' common fields, a deadline
on every wait for data, PCM and WAV bytes cut into chunks, and HTTP errors as sentences.

Chunks are coalesced (the first ~40 ms goes at once, later ones ~200 ms): every chunk is one
item on the Ray stream to the session, so a server's 10 ms packets would cost more in
transport than they carry.
"""
from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..openai_errors import short
from .base import AudioChunk, TTSUnavailable, VoiceStyle, scaled

FIRST_CHUNK_S = 0.04  # the reply's first sound goes out as soon as there is this much
CHUNK_S = 0.2

T = TypeVar("T")


class RemoteOptions(BaseModel):
    """Fields every server-backed engine takes."""

    model_config = ConfigDict(extra="forbid")

    # Connecting, and each wait for data (the first audio, then the next): past it the voice
    # has failed and the fallback voice speaks. Shorter than tts.timeout_s on purpose.
    timeout_s: float = Field(5.0, gt=0, le=120)


async def within(items: AsyncIterator[T], timeout_s: float, what: str) -> AsyncIterator[T]:
    """`items`, each waited for at most `timeout_s` (then TTSUnavailable naming `what`)."""
    iterator = items.__aiter__()
    while True:
        try:
            item = await asyncio.wait_for(iterator.__anext__(), timeout_s)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise TTSUnavailable(f"{what} did not answer within {timeout_s:g} s") from None
        yield item


class PcmChunks:
    """Raw little-endian PCM bytes (int16 or float32), arriving in any pieces, as AudioChunks
    at `sample_rate`: the first as soon as FIRST_CHUNK_S is there, then CHUNK_S at a time."""

    def __init__(self, sample_rate: int, style: VoiceStyle, text: str = "", dtype: str = "<i2") -> None:
        self.sample_rate = sample_rate
        self._dtype = np.dtype(dtype)
        self._style = style
        self._text = text
        self._bytes = b""
        self._samples: list[np.ndarray] = []
        self._held = 0
        self._sent = False

    def push(self, data: bytes) -> list[AudioChunk]:
        self._bytes += data
        usable = len(self._bytes) - len(self._bytes) % self._dtype.itemsize
        if usable:
            self._add(np.frombuffer(self._bytes[:usable], self._dtype))
            self._bytes = self._bytes[usable:]
        return self._ready(final=False)

    def flush(self) -> list[AudioChunk]:
        return self._ready(final=True)

    def _add(self, samples: np.ndarray) -> None:
        if samples.dtype.kind == "f":
            samples = np.clip(samples * 32768.0, -32768, 32767)
        self._samples.append(samples.astype(np.int16))
        self._held += len(samples)

    def _ready(self, final: bool) -> list[AudioChunk]:
        need = (CHUNK_S if self._sent else FIRST_CHUNK_S) * self.sample_rate
        if not self._held or (self._held < need and not final):
            return []
        samples = scaled(np.concatenate(self._samples), self._style.volume)
        self._samples, self._held = [], 0
        text = "" if self._sent else self._text
        self._sent = True
        return [AudioChunk(samples, self.sample_rate, text=text)]


class WavStream:
    """A streamed WAV (a header whose sizes may be 0 or wrong, then PCM): the header is read
    for the format, everything after the `data` chunk's header is audio."""

    def __init__(self, style: VoiceStyle, text: str, what: str) -> None:
        self._style, self._text, self._what = style, text, what
        self._head = b""
        self.pcm: PcmChunks | None = None

    def push(self, data: bytes) -> list[AudioChunk]:
        if self.pcm is not None:
            return self.pcm.push(data)
        self._head += data
        found = _parse_wav_header(self._head, self._what)
        if found is None:
            if len(self._head) > 4096:
                raise TTSUnavailable(f"{self._what} sent a WAV header without a data chunk")
            return []
        rate, dtype, start = found
        self.pcm = PcmChunks(rate, self._style, self._text, dtype)
        return self.pcm.push(self._head[start:])

    def flush(self) -> list[AudioChunk]:
        return self.pcm.flush() if self.pcm is not None else []


def _parse_wav_header(head: bytes, what: str) -> tuple[int, str, int] | None:
    """(sample rate, numpy dtype, offset of the first sample), or None until the header is in."""
    if len(head) < 12:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise TTSUnavailable(f"{what} did not send WAV audio (media_type wav)")
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        kind, size = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if kind == b"data":
            if fmt is None:
                raise TTSUnavailable(f"{what} sent a WAV without a format chunk")
            return fmt[0], fmt[1], pos + 8
        if pos + 8 + size > len(head):
            return None
        if kind == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", head[pos + 8:pos + 16])
            bits = struct.unpack("<H", head[pos + 22:pos + 24])[0]
            if channels != 1 or (tag, bits) not in ((1, 16), (3, 32)):
                raise TTSUnavailable(f"{what} sent WAV audio that is not mono 16-bit PCM or float")
            fmt = (rate, "<i2" if tag == 1 else "<f4")
        pos += 8 + size + size % 2
    return None


async def posted(client: Any, url: str, decoder_for: Callable[[Any], PcmChunks | WavStream], what: str,
                 timeout_s: float, **request: Any) -> AsyncIterator[AudioChunk]:
    """POST `request` (json=, data=, files=) to `url` and decode the streamed answer with the
    decoder `decoder_for(response)` picks (from its headers, say). Any failure is a
    TTSUnavailable naming `what`."""
    import httpx

    try:
        async with client.stream("POST", url, **request) as response:
            if response.status_code != 200:
                raise refused(response.status_code, await response.aread(), what)
            decoder = decoder_for(response)
            async for data in within(response.aiter_bytes(), timeout_s, what):
                for chunk in decoder.push(data):
                    yield chunk
    except httpx.HTTPError as exc:
        raise http_failure(exc, what, timeout_s) from None
    for chunk in decoder.flush():
        yield chunk


def http_failure(exc: Exception, what: str, timeout_s: float) -> TTSUnavailable:
    """An httpx error as a sentence naming the server."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return TTSUnavailable(f"{what} did not answer within {timeout_s:g} s")
    if isinstance(exc, httpx.ConnectError):
        return TTSUnavailable(f"cannot reach {what}")
    return TTSUnavailable(f"{what} failed: {short(str(exc)) or type(exc).__name__}")


def refused(status: int, body: bytes, what: str) -> TTSUnavailable:
    """A non-200 answer: its status and, for a JSON error body, its message fields."""
    import json

    detail = ""
    try:
        payload: Any = json.loads(body)
        if isinstance(payload, dict):
            detail = ": ".join(str(payload[k]) for k in ("message", "Exception", "detail") if payload.get(k))
    except ValueError:
        detail = body.decode("utf-8", "replace")
    return TTSUnavailable(f"{what} answered HTTP {status}" + (f": {short(detail)}" if detail else ""))

