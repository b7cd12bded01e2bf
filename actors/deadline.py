"""Every call a turn makes to a model stage has a deadline, so a hung replica costs a turn,
never the session: the wait ends in StageFailed with a message fit for the client."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from actors.errors import StageFailed, public_reason

log = logging.getLogger(__name__)


async def call(stage: str, response: Any, timeout_s: float, due_s: float | None = None) -> Any:
    """Await one handle call (a DeploymentResponse) for at most `timeout_s`. With `due_s`
    (sooner than that), an answer not back by then is given up: the call is cancelled and
    None returned, so the caller can go on without it (media that must keep time)."""
    late = due_s is not None and due_s < timeout_s
    try:
        result = await asyncio.wait_for(response, due_s if late else timeout_s)  # wraps any awaitable
        _raise_if_cancelled()
        return result
    except asyncio.CancelledError:
        _cancel(response)
        raise
    except Exception as exc:
        _cancel(response)
        if late and isinstance(exc, TimeoutError):
            return None
        raise _failed(stage, exc, timeout_s) from None


async def stream(stage: str, response: Any, timeout_s: float) -> AsyncIterator[Any]:
    """Iterate a streamed handle call, waiting at most `timeout_s` for each item. The remote
    generator is cancelled however the iteration ends (done, failed, or the turn cancelled)."""
    items = response.__aiter__()
    try:
        while True:
            try:
                item = await asyncio.wait_for(items.__anext__(), timeout_s)
                _raise_if_cancelled()
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise _failed(stage, exc, timeout_s) from None
            yield item
    finally:
        _cancel(response)  # no-op once exhausted; else it stops the work on the replica


def _raise_if_cancelled() -> None:
    """Python 3.11's wait_for returns the result when it lands just as the waiting task is
    cancelled, swallowing the cancellation: a barged-in turn would then speak on. The task
    still knows it is being cancelled; honour that."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _cancel(response: Any) -> None:
    cancel = getattr(response, "cancel", None)
    if cancel is not None:
        cancel()


def _failed(stage: str, exc: BaseException, timeout_s: float) -> StageFailed:
    if isinstance(exc, StageFailed):
        return exc
    if isinstance(exc, TimeoutError):
        reason = f"no answer within {timeout_s:g} s"
    else:
        reason = public_reason(exc)
    log.warning("%s call failed: %r", stage, exc)  # the full error stays in the server's log
    return StageFailed(stage, reason)
