"""Run a blocking producer (a model's token or sentence loop) in a worker thread and consume
it as an async iterator, without blocking the event loop.

The producer gets `emit(item)` and a `stop` event; it must check `stop` between items. When
the consumer stops iterating (barge-in: `aclose()` or task cancellation), `stop` is set, so
the worker finishes its current item and exits. An exception in the producer is raised in
the consumer.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

_DONE = object()  # end-of-stream marker on the queue

Producer = Callable[[Callable[[Any], None], threading.Event], None]


async def iterate_in_thread(produce: Producer, name: str) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def emit(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            stop.set()

    def run() -> None:
        try:
            produce(emit, stop)
        except Exception as exc:  # handed to the consumer, raised there
            emit(exc)
        emit(_DONE)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
