"""Microsoft Edge's online voices through the edge-tts package (no key; needs the internet).

`Communicate(...).stream()` is asked for word boundaries (its default is sentence ones): each
word's offset and duration mark where speech is, so the mouth rests between words. The MP3 it
sends is decoded as it arrives (PyAV), so a sentence's first words play while the rest is
still coming. `endpoint` replaces Microsoft's websocket URL (a mirror, or a test server).
"""
from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from pydantic import Field

from .base import AudioChunk, DEFAULT_STYLE, TTSUnavailable, Voice, VoiceStyle, WordSpan, chosen_voice
from .remote import CHUNK_S, FIRST_CHUNK_S, RemoteOptions, within

_INSTALL = "pip install -e '.[voices]'"
TICKS_PER_S = 10_000_000  # edge-tts offsets and durations are in 100 ns ticks
EDGE_RATE = 24000  # audio-24khz-48kbitrate-mono-mp3, the format edge-tts asks for


class Options(RemoteOptions):
    # Edge voice names (`edge-tts --list-voices`); the first is the default.
    voices: list[str] = Field(default_factory=lambda: ["en-US-AriaNeural", "zh-CN-XiaoxiaoNeural"], min_length=1)
    endpoint: str | None = None
    proxy: str | None = None


def prosody(style: VoiceStyle) -> dict[str, str]:
    """A style as edge-tts's rate, pitch and volume strings ("+10%", "-5Hz", "+0%")."""
    return {
        "rate": f"{round((style.rate - 1) * 100):+d}%",
        "pitch": f"{style.pitch_hz:+d}Hz",
        "volume": f"{round((style.volume - 1) * 100):+d}%",
    }


class Mp3Decoder:
    """MP3 bytes in any pieces -> int16 mono samples, as soon as each frame is whole."""

    def __init__(self) -> None:
        import av

        self._codec = av.CodecContext.create("mp3", "r")
        self.sample_rate: int | None = None

    def push(self, data: bytes | None) -> np.ndarray:
        """Decode `data` (None: the end of the stream)."""
        import av

        out = []
        for packet in self._codec.parse(data):
            try:
                frames = self._codec.decode(packet)
            except av.error.InvalidDataError:
                continue  # a damaged frame: a 24 ms gap, not a failed reply
            for frame in frames:
                self.sample_rate = frame.sample_rate
                samples = frame.to_ndarray()
                out.append(samples[0] if samples.ndim == 2 else samples)
        if not out:
            return np.zeros(0, np.int16)
        pcm = np.concatenate(out)
        if pcm.dtype.kind == "f":
            pcm = np.clip(pcm * 32768.0, -32768, 32767)
        return pcm.astype(np.int16)


class EdgeTTS:
    def __init__(self, **options: Any) -> None:
        try:
            import edge_tts  # noqa: F401
        except ImportError as e:
            raise ImportError(f"The edge TTS engine needs edge-tts: {_INSTALL}") from e
        self.options = Options.model_validate(options)
        self._what = "edge-tts" if self.options.endpoint is None else f"edge-tts at {self.options.endpoint}"
        if self.options.endpoint is not None:
            _use_endpoint(self.options.endpoint)
        self.sample_rate = EDGE_RATE

    def voices(self) -> list[Voice]:
        return [Voice(name, "-".join(name.split("-")[:2])) for name in self.options.voices]

    async def stream(self, text: str, voice: str | None = None,
                     style: VoiceStyle = DEFAULT_STYLE) -> AsyncIterator[AudioChunk]:
        import aiohttp
        import edge_tts

        o = self.options
        name = chosen_voice(voice, o.voices, "edge")
        seconds = max(1, math.ceil(o.timeout_s))  # edge-tts takes whole seconds
        communicate = edge_tts.Communicate(
            text, name, **prosody(style), boundary="WordBoundary", proxy=o.proxy,
            connect_timeout=seconds, receive_timeout=seconds,
        )
        speech = _Speech(text)
        try:
            async for message in within(communicate.stream(), o.timeout_s, self._what):
                if message["type"] == "WordBoundary":
                    speech.word(message["text"], message["offset"], message["duration"])
                elif message["type"] == "audio":
                    chunk = speech.audio(message["data"])
                    if chunk is not None:
                        yield chunk
        except edge_tts.exceptions.NoAudioReceived:
            raise TTSUnavailable(f"{self._what} sent no audio for voice {name!r} (is the name right?)") from None
        except aiohttp.WSServerHandshakeError as e:
            raise TTSUnavailable(f"{self._what} refused the connection (HTTP {e.status})") from None
        except (aiohttp.ClientConnectionError, OSError):
            raise TTSUnavailable(f"cannot reach {self._what}") from None
        except (aiohttp.ClientError, edge_tts.exceptions.EdgeTTSException) as e:
            raise TTSUnavailable(f"{self._what} failed: {type(e).__name__}: {str(e)[:200]}") from None
        last = speech.finish()
        if last is not None:
            yield last


class _Speech:
    """One sentence's decoded audio and word timings, cut into chunks."""

    def __init__(self, text: str) -> None:
        self._decoder = Mp3Decoder()
        self._text = text
        self._pending: list[np.ndarray] = []
        self._held = 0
        self._sent = 0  # samples handed out so far
        self._words: list[WordSpan] = []  # absolute sample positions in the sentence
        self._first = True

    def word(self, text: str, offset: int, duration: int) -> None:
        rate = self._rate()
        start = offset * rate // TICKS_PER_S
        self._words.append(WordSpan(text, start, start + duration * rate // TICKS_PER_S))

    def _rate(self) -> int:
        return self._decoder.sample_rate or EDGE_RATE

    def audio(self, data: bytes) -> AudioChunk | None:
        samples = self._decoder.push(data)
        if len(samples):
            self._pending.append(samples)
            self._held += len(samples)
        need = (FIRST_CHUNK_S if self._first else CHUNK_S) * self._rate()
        return self._take() if self._held >= need else None

    def finish(self) -> AudioChunk | None:
        samples = self._decoder.push(None)
        if len(samples):
            self._pending.append(samples)
            self._held += len(samples)
        return self._take() if self._held else None

    def _take(self) -> AudioChunk:
        samples = np.concatenate(self._pending)
        start, end = self._sent, self._sent + len(samples)
        words = [WordSpan(w.text, w.start - start, w.end - start) for w in self._words
                 if w.end > start and w.start < end]
        chunk = AudioChunk(samples, self._rate(),
                           text=self._text if self._first else "", words=words or None)
        self._pending, self._held, self._sent, self._first = [], 0, end, False
        return chunk


def _use_endpoint(url: str) -> None:
    """Point edge-tts at `url`: it builds each connection's URL from a module constant, adding
    `&ConnectionId=...`, so the URL needs a query string of its own."""
    import edge_tts.communicate

    if "?" not in url:
        url += "?TrustedClientToken=" + edge_tts.constants.TRUSTED_CLIENT_TOKEN
    edge_tts.communicate.WSS_URL = url
