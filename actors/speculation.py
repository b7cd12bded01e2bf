"""Speculative replies: answer a pause before the VAD is sure that it ends the utterance.

The VAD ends an utterance after `end_silence_ms` of silence (300 ms). Waiting for that before
transcribing, prompting the LLM and synthesizing the first clause puts all of their time on
top of it. So once a pause is `speculate_after_s` long, the session starts the reply (ASR ->
LLM -> TTS) behind a closed `Gate`: its events are held, and its audio waits before lip-sync.
If the VAD then ends the utterance at that pause, the gate opens and the reply goes on at
once; if the user goes on talking, the turn is cancelled and nothing of it was seen or
remembered.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from serve_app.events import Event


class Gate:
    """Holds a turn's client events and deferred actions until `open()` (its turn awaits
    `wait()` before lip-sync); an open gate passes everything straight through."""

    def __init__(self, emit: Callable[[Event], None], opened: bool = False) -> None:
        self._emit = emit
        self._held: list[Event] = []  # each stamped when made: the client sees when it happened
        self._actions: list[Callable[[], None]] = []
        self._opened = asyncio.Event()
        if opened:
            self._opened.set()

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def emit(self, event: Event) -> None:
        if self.is_open:
            self._emit(event)
        else:
            self._held.append(event)

    def when_open(self, action: Callable[[], None]) -> None:
        """Run `action` now if the gate is open, else when it opens (never, if it does not):
        a speculative reply's exchange enters the conversation only once it is confirmed."""
        if self.is_open:
            action()
        else:
            self._actions.append(action)

    async def wait(self) -> None:
        await self._opened.wait()

    def open(self) -> None:
        held, self._held = self._held, []
        actions, self._actions = self._actions, []
        self._opened.set()
        for event in held:
            self._emit(event)
        for action in actions:
            action()
