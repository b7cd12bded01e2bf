"""The event vocabulary: what the server can emit is what the page handles and the README
documents, and client messages are validated with a one-line reason."""
from __future__ import annotations

import re

import pytest

from serve_app.config import PROJECT_ROOT
from serve_app.events import (
    EVENT_TYPES, BadMessage, PushToTalk, SetMicMode, State, TurnEnd, parse_message,
)


def handled_by_page() -> set[str]:
    source = (PROJECT_ROOT / "web" / "app.js").read_text()
    body = source[source.index("function handleEvent("):]
    body = body[: body.index("\n  }\n")]  # to the end of the function
    return set(re.findall(r"case '([a-z_]+)':", body))


def test_the_page_handles_exactly_the_events_the_server_emits():
    assert len(EVENT_TYPES) >= 12
    assert handled_by_page() == EVENT_TYPES


def test_the_readme_documents_every_event():
    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = sorted(t for t in EVENT_TYPES if f"`{t}`" not in readme)
    assert not missing, f"README.md does not document events {missing}"


def test_events_serialise_with_their_type_and_time():
    event = State(state="speaking", turn_id="abc")
    data = event.model_dump()
    assert data["type"] == "state" and data["turn_id"] == "abc" and data["t"] > 1_700_000_000_000
    assert TurnEnd.model_validate_json(TurnEnd(turn_id="a", interrupted=True).to_json()).interrupted


def test_control_messages_parse_to_typed_commands():
    assert parse_message('{"type": "mic_mode", "mode": "push_to_talk"}') == SetMicMode(type="mic_mode", mode="push_to_talk")
    assert parse_message(b'{"type": "ptt", "down": true}') == PushToTalk(type="ptt", down=True)


@pytest.mark.parametrize("raw, says", [
    ("not json", "Invalid JSON"),
    ('{"type": "dance"}', "dance"),
    ('{"type": "mic_mode", "mode": "loud"}', "mode"),
    ('{"type": "ptt"}', "down"),
    ('{"type": "ptt", "down": true, "extra": 1}', "extra"),
    ("[]", "message"),
])
def test_bad_control_messages_get_one_line_reasons(raw, says):
    with pytest.raises(BadMessage) as caught:
        parse_message(raw)
    assert says in str(caught.value) and "\n" not in str(caught.value)
