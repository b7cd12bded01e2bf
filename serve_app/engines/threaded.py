"""Run a blocking producer (a model's token or sentence loop) in a worker thread and consume
it as an async iterator, without blocking the event loop.

The producer gets `emit(item)` and a `stop` event; it must check `stop` between items. When
the consumer stops iterating (barge-in: `aclose()` or task cancellation), `stop` is set, so
the worker finishes its current item and exits. An exception in the producer is raised in
the consumer. With `slots`, a stream first waits for one (a waiting stream that is cancelled
never starts its thread) and holds it until its thread has ended, not merely until the
consumer stopped: the threads alive at once never outnumber the slots, however many
requests are started and cancelled.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

_DONE = object()  # end-of-stream marker on the queue

Producer = Callable[[Callable[[Any], None], threading.Event], None]


class Slots:
    """At most `n` worker threads at once (an asyncio.Semaphore for the loop in use)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._semaphore: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore[0] is not loop:
            self._semaphore = (loop, asyncio.Semaphore(self.n))
        return self._semaphore[1]


async def iterate_in_thread(produce: Producer, name: str, slots: Slots | None = None) -> AsyncIterator[Any]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()
    semaphore = slots.semaphore() if slots is not None else None
    if semaphore is not None:
        await semaphore.acquire()

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
        if semaphore is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(semaphore.release)

    try:
        threading.Thread(target=run, name=name, daemon=True).start()
    except BaseException:
        if semaphore is not None:
            semaphore.release()
        raise
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
