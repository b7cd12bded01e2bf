"""Fake stage handles for the session core's unit tests: what a Serve `DeploymentHandle`
looks like to a turn (`.options(...).<method>.remote(...)`, awaitable or streamed, with
`.cancel()`), with no Ray behind it."""
from __future__ import annotations

import numpy as np

from serve_app.engines.tts.base import AudioChunk


class FakeStream:
    """What `handle.options(stream=True).method.remote(...)` returns: async-iterable, cancellable."""

    def __init__(self, items) -> None:
        self._items = items
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self._items.__anext__()
        return item

    def cancel(self) -> None:
        self.cancelled = True


class FakeResponse:
    def __init__(self, coro) -> None:
        self._coro = coro
        self.cancelled = False

    def __await__(self):
        return self._coro.__await__()

    def cancel(self) -> None:
        self.cancelled = True


class FakeHandle:
    """`.options(...).<method>.remote(...)` calls that method's behaviour; records each call
    as (method, args, response)."""

    def __init__(self, method: str, behaviour, streaming: bool) -> None:
        self._methods: dict[str, tuple] = {}
        self.calls: list[tuple] = []
        self.also(method, behaviour, streaming)

    def also(self, method: str, behaviour, streaming: bool) -> "FakeHandle":
        self._methods[method] = (behaviour, streaming)
        return self

    def options(self, **_):
        return self

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(name)
        behaviour, streaming = self._methods[name]
        handle = self

        class _Method:
            def remote(self, *args):
                result = behaviour(*args)
                response = FakeStream(result) if streaming else FakeResponse(result)
                handle.calls.append((name, args, response))
                return response

        return _Method()

    @property
    def responses(self) -> list:
        return [response for _, _, response in self.calls]

    def called(self, method: str) -> list[tuple]:
        return [args for name, args, _ in self.calls if name == method]

    def responses_of(self, method: str) -> list:
        return [response for name, _, response in self.calls if name == method]


def speech(seconds: float = 0.4) -> AudioChunk:
    t = np.arange(int(22050 * seconds)) / 22050
    return AudioChunk((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), 22050)


async def tts_ok(text, voice, *_):
    yield speech()


async def frames_ok(chunk):
    return [np.zeros((8, 8, 3), np.uint8)] * len(chunk.visemes)
