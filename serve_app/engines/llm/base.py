"""The LLM stage: a chat history in, streamed text deltas out."""
from __future__ import annotations

from typing import AsyncIterator, Protocol


class LLMUnavailable(RuntimeError):
    """The backend cannot answer (unreachable, timed out, bad key); the message says why."""


# Messages are OpenAI-style dicts: {"role": "system" | "user" | "assistant", "content": str}.
Message = dict[str, str]


class LLMEngine(Protocol):
    """Every LLM backend implements this; backends are chosen by name in config."""

    def stream(
        self, messages: list[Message], max_tokens: int | None = None, session: str | None = None
    ) -> AsyncIterator[str]:
        """Yield the reply as text deltas as soon as they are generated. `session` is the id
        of the session asking: a backend that keeps conversations on its server (Dify) keeps
        each session's apart; the others need only `messages`.

        Raises LLMUnavailable (before or during the stream) when the backend fails. Closing
        the iterator (barge-in) must stop generation promptly.
        """
        ...

    async def prefill(self, messages: list[Message], max_tokens: int | None = None) -> None:
        """Get ready for a prompt that starts with `messages` (the history after an exchange):
        a local model evaluates them into its cache while the avatar is still speaking, so the
        next turn processes only the new user message. Remote backends do nothing."""
        ...
