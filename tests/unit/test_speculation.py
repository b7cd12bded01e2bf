"""The gate that holds a speculative reply until the VAD confirms the end of speech."""
from __future__ import annotations

import asyncio

from actors.speculation import Gate


async def test_closed_gate_holds_events_and_actions_until_it_opens(monkeypatch):
    clock = iter([1000.0, 1000.5, 2000.0, 2000.5])  # time.time() at each emit, then later
    monkeypatch.setattr("actors.speculation.time.time", lambda: next(clock))
    sent, done = [], []
    gate = Gate(sent.append)
    gate.emit({"type": "user_transcript", "text": "hi"})
    gate.emit({"type": "assistant_text", "text": "Hello"})
    gate.when_open(lambda: done.append("recorded"))
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)  # let the waiter block on the closed gate
    assert sent == [] and done == [] and not waiter.done()
    stamps = [e["t"] for e in gate._held]  # stamped when they happened, not when let out
    gate.open()
    await waiter
    assert [e["type"] for e in sent] == ["user_transcript", "assistant_text"]
    assert [e["t"] for e in sent] == stamps == [1000000, 1000500]
    assert done == ["recorded"]
    gate.emit({"type": "state"})  # open: straight through
    gate.when_open(lambda: done.append("again"))
    assert sent[-1] == {"type": "state"} and done == ["recorded", "again"]


async def test_a_gate_that_never_opens_lets_nothing_out():
    sent, done = [], []
    gate = Gate(sent.append)
    gate.emit({"type": "user_transcript", "text": "tell me"})
    gate.when_open(lambda: done.append("recorded"))
    del gate  # the speculation was discarded
    assert sent == [] and done == []


async def test_an_open_gate_passes_everything_at_once():
    sent = []
    gate = Gate(sent.append, opened=True)
    gate.emit({"type": "error"})
    assert sent == [{"type": "error"}] and "t" not in sent[0]  # the session stamps it
