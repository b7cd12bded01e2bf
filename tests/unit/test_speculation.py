"""The gate that holds a speculative reply until the VAD confirms the end of speech."""
from __future__ import annotations

import asyncio

from actors.speculation import Gate
from serve_app.events import AssistantText, Error, State, UserTranscript


async def test_closed_gate_holds_events_and_actions_until_it_opens():
    sent, done = [], []
    gate = Gate(sent.append)
    held = [UserTranscript(turn_id="a", text="hi", t=1000000), AssistantText(turn_id="a", text="Hello", delta=True, t=1000500)]
    for event in held:
        gate.emit(event)
    gate.when_open(lambda: done.append("recorded"))
    waiter = asyncio.create_task(gate.wait())
    await asyncio.sleep(0)  # let the waiter block on the closed gate
    assert sent == [] and done == [] and not waiter.done()
    gate.open()
    await waiter
    assert [e.type for e in sent] == ["user_transcript", "assistant_text"]
    assert sent == held and [e.t for e in sent] == [1000000, 1000500]  # when they happened, not when let out
    assert done == ["recorded"]
    gate.emit(State(state="idle"))  # open: straight through
    gate.when_open(lambda: done.append("again"))
    assert sent[-1].type == "state" and done == ["recorded", "again"]


async def test_a_gate_that_never_opens_lets_nothing_out():
    sent, done = [], []
    gate = Gate(sent.append)
    gate.emit(UserTranscript(turn_id="a", text="tell me"))
    gate.when_open(lambda: done.append("recorded"))
    del gate  # the speculation was discarded
    assert sent == [] and done == []


async def test_an_open_gate_passes_everything_at_once():
    sent = []
    gate = Gate(sent.append, opened=True)
    event = Error(stage="tts", message="speech synthesis failed")
    gate.emit(event)
    assert sent == [event]
