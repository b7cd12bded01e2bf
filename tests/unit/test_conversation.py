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


def test_history_is_bounded_and_trimmed_to_its_newest_half_at_once():
    conversation = Conversation(AVA, max_turns=4)
    sizes = []
    for i in range(9):
        conversation.record(f"q{i}", f"a{i}")
        sizes.append(len(conversation))
    # grows to 4, then drops to 2 in one step, so most prompts extend the previous one
    assert sizes == [1, 2, 3, 4, 2, 3, 4, 2, 3]
    messages = conversation.messages("next")
    assert [m["content"] for m in messages] == ["You are Ava.", "q6", "a6", "q7", "a7", "q8", "a8", "next"]


def test_no_history_when_max_turns_is_zero():
    conversation = Conversation(AVA, max_turns=0)
    conversation.record("q", "a")
    assert conversation.messages("next") == [
        {"role": "system", "content": "You are Ava."},
        {"role": "user", "content": "next"},
    ]


def test_an_interrupted_reply_is_remembered_as_spoken():
    conversation = Conversation(AVA, max_turns=4)
    conversation.record("Tell me a story", "")  # cut before anything was said
    assert conversation.messages("Shorter please")[-2] == {"role": "assistant", "content": "…"}


def test_no_system_message_without_a_prompt():
    conversation = Conversation(Character(id="x", name="X"), max_turns=1)
    assert conversation.messages("hello") == [{"role": "user", "content": "hello"}]


def test_one_turn_of_history_keeps_the_latest_exchange():
    conversation = Conversation(AVA, max_turns=1)
    for i in range(3):
        conversation.record(f"q{i}", f"a{i}")
    assert [m["content"] for m in conversation.messages("next")] == ["You are Ava.", "q2", "a2", "next"]
