"""The ingress side of a WebSocket session: check the hello, then relay both ways between
the socket and the session actor (actors/transports/websocket.py does the pacing).

Down: the relay long-polls the actor (`ws_pull`) and writes what it gets. Up: client
messages (JSON text, binary mic PCM) are batched while the previous batch is in flight, so
a 20 ms mic costs the actor one call per round trip, not fifty a second. What waits here is
bounded (`MAX_UPLINK_BYTES`; mic audio beyond it is dropped, the oldest first).

Close codes: 4400 bad hello, 4403 wrong token, 4404 no such session, 4408 no heartbeat,
4409 replaced by a newer connection with the same token, 1000 the session ended.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from actors.errors import SessionError
from serve_app.events import BadMessage, Hello, parse_hello

log = logging.getLogger(__name__)

CLOSE_BAD_HELLO, CLOSE_FORBIDDEN, CLOSE_NOT_FOUND = 4400, 4403, 4404
MAX_UPLINK_BYTES = 256 * 1024  # client messages waiting for the actor (8 s of 16 kHz PCM16)


def close_code(exc: BaseException) -> int:
    cause = getattr(exc, "cause", None) or exc
    status = getattr(cause, "status", 500)
    return {403: CLOSE_FORBIDDEN, 404: CLOSE_NOT_FOUND}.get(status, CLOSE_BAD_HELLO)


async def read_hello(websocket: WebSocket, timeout_s: float, max_bytes: int) -> Hello | None:
    """The first message: `{"type": "hello", "token": ..., "face": ...}`. On anything else
    the socket is closed with 4400 and a reason, and None returned."""
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout_s)
    except asyncio.TimeoutError:
        await websocket.close(CLOSE_BAD_HELLO, f"no hello within {timeout_s:g} s")
        return None
    raw = message.get("text") if message.get("text") is not None else message.get("bytes")
    if message["type"] == "websocket.disconnect" or raw is None:
        return None
    if len(raw) > max_bytes:
        await websocket.close(CLOSE_BAD_HELLO, "hello too long")
        return None
    try:
        return parse_hello(raw)
    except BadMessage as exc:
        await websocket.close(CLOSE_BAD_HELLO, f"bad hello: {exc}"[:120])
        return None


class Relay:
    def __init__(self, websocket: WebSocket, session: Any, connection: str, max_message_bytes: int) -> None:
        self._ws = websocket
        self._session = session
        self._connection = connection
        self._max_message_bytes = max_message_bytes
        self._uplink: list[str | bytes] = []
        self._uplink_bytes = 0
        self._wake = asyncio.Event()
        self.dropped = 0  # client messages dropped here (too big, or the actor behind)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._down()), asyncio.create_task(self._up()),
                 asyncio.create_task(self._forward())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            reason = next(iter(done)).result() if not next(iter(done)).exception() else "relay failed"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):  # already closed by _down, or the client left
                await self._ws.close(1000, "the session ended")
        with contextlib.suppress(Exception):
            await self._session.ws_gone.remote(self._connection, reason)

    async def _down(self) -> str:
        while True:
            batch = await self._session.ws_pull.remote(self._connection)
            if "close" in batch:
                with contextlib.suppress(Exception):
                    await self._ws.close(batch["close"], batch["reason"][:120])
                return batch["reason"]
            for message in batch["messages"]:
                if isinstance(message, bytes):
                    await self._ws.send_bytes(message)
                else:
                    await self._ws.send_text(message)

    async def _up(self) -> str:
        while True:
            try:
                message = await self._ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return "the client went away"
            if message["type"] == "websocket.disconnect":
                return "the client went away"
            item = message.get("text") if message.get("text") is not None else message.get("bytes")
            if item is None or len(item) > self._max_message_bytes:
                self.dropped += 1
                continue
            self._uplink.append(item)
            self._uplink_bytes += len(item)
            while self._uplink_bytes > MAX_UPLINK_BYTES:  # the actor is behind: shed the oldest
                dropped = self._uplink.pop(0)
                self._uplink_bytes -= len(dropped)
                self.dropped += 1
            self._wake.set()

    async def _forward(self) -> str:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._uplink, self._uplink_bytes = self._uplink, [], 0
            try:
                await self._session.ws_receive.remote(self._connection, batch)
            except SessionError as exc:
                return str(getattr(exc, "cause", None) or exc)
