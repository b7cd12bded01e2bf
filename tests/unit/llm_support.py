"""What the LLM backend tests share (no llama.cpp import here: see test_llama_cpp.py)."""
from __future__ import annotations

import time

CHAT = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]


async def first_and_rest(stream) -> tuple[list[str], float]:
    """All deltas of ``stream`` and the seconds to the first one."""
    started = time.perf_counter()
    deltas, first = [], None
    async for delta in stream:
        first = first or time.perf_counter() - started
        deltas.append(delta)
    return deltas, first or 0.0
