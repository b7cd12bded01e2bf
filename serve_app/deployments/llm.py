"""LLM deployment: hosts one LLM engine and streams reply deltas to session actors."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from ray import serve

from serve_app.engines.llm import create_llm_engine
from serve_app.engines.llm.base import Message


@serve.deployment(name="LLM")
class LLMDeployment:
    def __init__(self, backend: str, options: dict) -> None:
        self.engine = create_llm_engine(backend, **options)

    async def stream(
        self, messages: list[Message], max_tokens: int | None = None, session: str | None = None
    ) -> AsyncIterator[str]:
        # Called with handle.options(stream=True); cancelling the caller's generator cancels
        # this one, and closing the engine's stream stops generation.
        async with aclosing(self.engine.stream(messages, max_tokens, session)) as deltas:
            async for delta in deltas:
                yield delta

    async def prefill(self, messages: list[Message], max_tokens: int | None = None) -> None:
        await self.engine.prefill(messages, max_tokens)
