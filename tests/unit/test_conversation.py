"""Per-session dialogue state: system prompt, bounded history, partial replies kept."""
from __future__ import annotations

from actors.conversation import Conversation
from serve_app.config import Character

AVA = Character(id="ava", name="Ava", system_prompt="You are Ava.")


def test_messages_start_with_the_system_prompt_and_end_with_the_user():
    conversation = Conversation(AVA, max_turns=3)
    assert conversation.messages("Hi") == [
        {"role": "system", "content": "You are Ava."},
        {"role": "user", "content": "Hi"},
    ]


def test_history_keeps_only_the_last_turns():
    conversation = Conversation(AVA, max_turns=2)
    for i in range(5):
        conversation.record(f"q{i}", f"a{i}")
    messages = conversation.messages("next")
    assert [m["content"] for m in messages] == ["You are Ava.", "q3", "a3", "q4", "a4", "next"]
    assert len(conversation) == 2


def test_an_interrupted_reply_is_remembered_as_spoken():
    conversation = Conversation(AVA, max_turns=4)
    conversation.record("Tell me a story", "")  # cut before anything was said
    assert conversation.messages("Shorter please")[-2] == {"role": "assistant", "content": "…"}


def test_no_system_message_without_a_prompt():
    conversation = Conversation(Character(id="x", name="X"), max_turns=1)
    assert conversation.messages("hello") == [{"role": "user", "content": "hello"}]
