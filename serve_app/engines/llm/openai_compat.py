"""Any OpenAI-compatible chat endpoint, streamed: OpenAI, Qwen (DashScope), Ollama, vLLM, ..."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ..openai_errors import describe
from .base import LLMUnavailable, Message

_INSTALL = "pip install -e '.[llm]'"


class OpenAICompatLLM:
    """Streams chat completions from an OpenAI-compatible server.

    ``base_url`` examples:

    - OpenAI: ``https://api.openai.com/v1`` (model e.g. ``gpt-4o-mini``)
    - Qwen, DashScope compatible mode: ``https://dashscope.aliyuncs.com/compatible-mode/v1``
      (``qwen-plus``; international: ``https://dashscope-intl.aliyuncs.com/compatible-mode/v1``)
    - Ollama: ``http://127.0.0.1:11434/v1`` (``qwen2.5:0.5b``; ``api_key_env=None``)
    - vLLM: ``http://127.0.0.1:8000/v1`` (the served model name; ``api_key_env=None`` unless
      started with ``--api-key``)

    The key is read from the environment variable named by ``api_key_env``, never from config.
    ``timeout_s`` bounds connecting and each wait for data (first token, then between tokens);
    ``max_retries`` failed attempts are retried before LLMUnavailable. ``extra_body`` is merged
    into each request (e.g. ``{"enable_thinking": False}`` for Qwen3).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 10.0,
        max_retries: int = 1,
        temperature: float = 0.7,
        max_tokens: int = 300,
        extra_body: dict | None = None,
    ) -> None:
        try:
            from openai import AsyncOpenAI
        except ImportError as e:
            raise ImportError(f"The OpenAI-compatible LLM engine needs openai: {_INSTALL}") from e
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise LLMUnavailable(
                    f"LLM endpoint {base_url} needs an API key: set the environment variable "
                    f"{api_key_env} (or api_key_env: null for a server without keys)"
                )
        else:
            key = "no-key"  # local servers ignore it, but the client insists on one
        self._key = key
        self._key_env = api_key_env
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = extra_body
        self._client = AsyncOpenAI(
            base_url=base_url, api_key=key, timeout=timeout_s, max_retries=max_retries
        )

    async def prefill(self, messages: list[Message], max_tokens: int | None = None) -> None:
        """Nothing to warm here: the endpoint manages its own prompt cache."""

    async def stream(
        self, messages: list[Message], max_tokens: int | None = None, session: str | None = None
    ) -> AsyncIterator[str]:
        """Yield the reply's text deltas. Closing the generator closes the HTTP stream, which
        makes the server stop generating."""
        import openai

        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                temperature=self.temperature,
                max_tokens=max_tokens or self.max_tokens,
                extra_body=self.extra_body,
            )
        except openai.OpenAIError as e:
            raise self._unavailable(e) from None
        try:
            async for chunk in response:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.OpenAIError as e:
            raise self._unavailable(e) from None
        finally:
            await response.close()

    def _unavailable(self, e: Any) -> LLMUnavailable:
        """A short message for ``e`` that names the endpoint and never the key."""
        return LLMUnavailable(describe(e, f"LLM endpoint {self.base_url}", self.timeout_s, self._key, self._key_env,
                                       f"has no model {self.model!r} or no chat completions API"))
