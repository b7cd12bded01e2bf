"""What a transport and its session know of each other: nothing else.

A transport carries one client's events out and its messages and mic audio in. Media out is
not here: live transports read the session's `MediaClock` (actors/clock.py) directly.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from serve_app.events import Event


class SessionPort(Protocol):
    """The session, as a transport sees it."""

    async def connected(self) -> None:
        """Media flows to the client (the greeting may start)."""

    async def disconnected(self, reason: str) -> None:
        """The client is gone for good."""

    async def control(self, raw: str | bytes) -> None:
        """A client message (events.ControlMessage); refused ones get an error event."""

    async def hear(self, audio: np.ndarray) -> None:
        """Mic audio: float32 mono at SPEECH_RATE."""


class Transport(Protocol):
    def send_event(self, event: Event) -> None: ...
    async def close(self) -> None: ...
