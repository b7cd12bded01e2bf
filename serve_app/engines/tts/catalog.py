"""Every TTS engine one deployment hosts, found by voice id, each behind a breaker.

A voice id belongs to exactly one engine. After an engine fails, the breaker refuses it at
once for a while (doubling while it keeps failing), so a dead server costs each session one
timeout, not one per sentence; the session says those sentences with the fallback engine.
"""
from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict

from .base import DEFAULT_STYLE, AudioChunk, TTSEngine, TTSUnavailable, VoiceStyle


class Breaker:
    """Open (refusing) for `base_s` after a failure, twice that after the next, up to
    `max_s`; a success closes it and resets the wait."""

    def __init__(self, base_s: float, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._base, self._max, self._clock = base_s, max(max_s, base_s), clock
        self._wait = base_s
        self._until = 0.0
        self._reason = ""

    def check(self, what: str) -> None:
        left = self._until - self._clock()
        if left > 0:
            raise TTSUnavailable(f"{what} is resting after a failure ({self._reason}); next try in {left:.0f} s")

    def failed(self, reason: str) -> None:
        self._until = self._clock() + self._wait
        self._wait = min(self._wait * 2, self._max)
        self._reason = reason

    def succeeded(self) -> None:
        self._wait = self._base
        self._until = 0.0


class VoiceCatalog:
    """`engines`: name -> (backend, engine), the first holding the default voice;
    `fallback`: the name of the engine that says what a failed voice could not."""

    def __init__(self, engines: dict[str, tuple[str, TTSEngine]], fallback: str | None,
                 retry_after_s: float = 10.0, max_retry_after_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if fallback is not None and fallback not in engines:
            raise ValueError(f"fallback engine {fallback!r} is not among {list(engines)}")
        self._engines = engines
        self._fallback = fallback
        self._default = next(iter(engines))
        self._breakers = {name: Breaker(retry_after_s, max_retry_after_s, clock) for name in engines}
        self._owner: dict[str, str] = {}
        for name, (_, engine) in engines.items():
            for voice in engine.voices():
                if voice.id in self._owner:
                    raise ValueError(f"voice {voice.id!r} is offered by TTS engines {self._owner[voice.id]!r} "
                                     f"and {name!r}; voice ids must be unique")
                self._owner[voice.id] = name

    def voices(self) -> list[dict]:
        """What GET /api/voices shows: each voice with its backend, the default first."""
        out = []
        for name, (backend, engine) in self._engines.items():
            for i, voice in enumerate(engine.voices()):
                out.append({**asdict(voice), "backend": backend, "engine": name,
                            "default": name == self._default and i == 0,
                            "fallback": name == self._fallback and i == 0})
        return out

    def voice_ids(self) -> list[str]:
        return list(self._owner)

    async def stream(self, text: str, voice: str | None = None, style: VoiceStyle = DEFAULT_STYLE,
                     fallback: bool = False) -> AsyncIterator[AudioChunk]:
        """`voice`'s speech (None: the default voice); with `fallback`, the fallback
        engine's default voice instead (TTSUnavailable when there is none)."""
        if fallback:
            if self._fallback is None:
                raise TTSUnavailable("no fallback voice is configured (tts.fallback)")
            name, voice = self._fallback, None
        elif voice is None:
            name = self._default
        elif voice in self._owner:
            name = self._owner[voice]
        else:
            raise ValueError(f"unknown voice {voice!r}; available: {self.voice_ids()}")
        backend, engine = self._engines[name]
        breaker = self._breakers[name]
        breaker.check(f"the {backend} voice")
        try:
            async for chunk in engine.stream(text, voice, style):
                yield chunk
        except TTSUnavailable as exc:
            breaker.failed(str(exc))
            raise
        breaker.succeeded()
