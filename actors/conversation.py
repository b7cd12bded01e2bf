"""A spoken exchange: the character's prompt, a bounded history, and the reply to one utterance.

`reply` is the sentence source of a conversational turn: (ASR -> user transcript ->) streamed
LLM -> sentences as soon as each ends. It runs inside the turn's task, so a barge-in that cancels
the turn closes it, and its `finally` closes the LLM stream on the LLM replica.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable, Mapping

import numpy as np

from actors import deadline
from actors.errors import StageFailed, public_reason
from actors.turn import Marks
from serve_app.config import Character
from serve_app.engines.llm.sentences import SentenceSplitter
from serve_app.events import AssistantText, Error, Event, UserTranscript

log = logging.getLogger(__name__)

Emit = Callable[[Event], None]


class Conversation:
    """System prompt plus at most `max_turns` user/assistant exchanges.

    When full, the history is trimmed to its newest half at once rather than by one exchange
    per turn: a local LLM (llama.cpp) reuses its cache for a prompt that extends the previous
    one, and sliding the window by one turn would change every token after the system prompt.
    """

    def __init__(self, character: Character, max_turns: int, session: str | None = None,
                 history: list[dict[str, str]] | None = None,
                 on_change: Callable[[], None] = lambda: None) -> None:
        """`history`: a resumed session's (from the store); `on_change` is called after each
        recorded exchange (the session writes its record through to the store)."""
        self.character = character
        self.session = session  # the session's id: server-side conversations (Dify) stay apart
        self._max_messages = 2 * max_turns
        self._keep_messages = 2 * max(1, max_turns // 2) if max_turns else 0
        self._history: list[dict[str, str]] = list(history or [])[-self._max_messages:] if max_turns else []
        self._on_change = on_change

    def messages(self, user_text: str) -> list[dict[str, str]]:
        return self.prefix() + [{"role": "user", "content": user_text}]

    def prefix(self) -> list[dict[str, str]]:
        """What every next prompt starts with: the system prompt and the history."""
        system = [{"role": "system", "content": self.character.system_prompt}] if self.character.system_prompt else []
        return system + self._history

    def record(self, user_text: str, assistant_text: str) -> None:
        """Remember an exchange: the model's own text for a finished reply (so the next prompt
        extends the cached one), the spoken part for an interrupted one."""
        self._history += [
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": assistant_text or "…"},
        ]
        if len(self._history) > self._max_messages:
            del self._history[: len(self._history) - self._keep_messages]
        self._on_change()

    @property
    def history(self) -> list[dict[str, str]]:
        return list(self._history)

    def __len__(self) -> int:
        return len(self._history) // 2


async def reply(
    *,
    audio: np.ndarray | None = None,
    text: str | None = None,
    turn_id: str,
    asr: Any,
    llm: Any,
    conversation: Conversation,
    marks: Marks,
    emit: Emit,
    max_tokens: int | None,
    timeouts: Mapping[str, float],
    min_words: int = 1,
    when_committed: Callable[[Callable[[], None]], None] = lambda action: action(),
) -> AsyncIterator[str]:
    """Yields the reply's sentences to the user's `audio` (transcribed first) or typed `text`;
    records the exchange in `conversation` when done, through `when_committed` (a speculative
    reply's gate: recorded once confirmed, never if it is discarded)."""
    if audio is not None:
        try:
            transcript = await deadline.call("asr", asr.transcribe.remote(audio), timeouts["asr"])
        except StageFailed as exc:
            emit(Error(stage=exc.stage, turn_id=turn_id, message=str(exc)))
            yield conversation.character.apology_asr
            return
        marks.mark("asr_done")
        text = transcript.text.strip()
        emit(UserTranscript(turn_id=turn_id, text=text))
        if len(text.split()) < min_words and not _has_cjk(text):
            return  # noise or a cough: nothing to answer
    response = llm.options(stream=True).stream.remote(conversation.messages(text), max_tokens, conversation.session)
    stream = deadline.stream("llm", response, timeouts["llm"])
    splitter = SentenceSplitter()
    said: list[str] = []
    generated: list[str] = []
    finished = False
    try:
        async for delta in stream:
            generated.append(delta)
            marks.mark("llm_first_token")
            emit(AssistantText(turn_id=turn_id, text=delta, delta=True))
            for sentence in splitter.push(delta):
                said.append(sentence)
                yield sentence
        for sentence in splitter.flush():
            said.append(sentence)
            yield sentence
        finished = True
    except StageFailed as exc:
        emit(Error(stage=exc.stage, turn_id=turn_id, message=str(exc)))
        if not said:
            yield conversation.character.apology_llm
    finally:
        await stream.aclose()  # barge-in: stop generating on the LLM replica
        answer = "".join(generated).strip() if finished else " ".join(said)

        def commit() -> None:
            conversation.record(text, answer)
            # Off the critical path (the avatar is still speaking): the next prompt's prefix
            # changed (an interrupted reply, a trimmed history), have the LLM read it now.
            prefill(llm, conversation, max_tokens)

        when_committed(commit)


def prefill(llm: Any, conversation: Conversation, max_tokens: int | None) -> None:
    """Have the LLM read what the next prompt starts with, in the background (see
    LLMEngine.prefill): after each exchange, and at the start of a session (the system prompt),
    so the first question does not pay for reading it."""
    if messages := conversation.prefix():
        _in_background(llm.prefill.remote(messages, max_tokens), "LLM prefill")


_background: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks


def _in_background(response: Any, what: str) -> None:
    """Await a handle call nobody waits for, logging (not raising) its failure."""

    async def wait() -> None:
        try:
            await response
        except Exception as exc:  # an optimisation failed; the next turn just runs slower
            log.info("%s failed: %s", what, public_reason(exc))

    task = asyncio.get_running_loop().create_task(wait())
    _background.add(task)
    task.add_done_callback(_background.discard)


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)
