"""Limits before work: an ASGI middleware that refuses request bodies by size before any
route parses them, admin routes by token before their body is read, long-lived requests
beyond their kind's bound, and bodies that arrive too slowly.

A body is refused twice over: by its Content-Length at once (413, the body never read), and
by counting the bytes as they stream in (chunked uploads that say no length): past the limit
the read stops with a 413 and the connection is closed. A body that falls behind the minimum
rate (after a grace period) is cut off with a 408. `stats` counts what refused requests cost
the replica, so an operator (and a test) can see that nothing was read to the end.

Long-lived requests (WebSocket relays, MJPEG viewers, downloads, uploads) each hold a request
slot of the replica while they last; `StreamGate` bounds each kind in total and per client, so
that a few of them can never take the slots short requests need.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from fastapi import HTTPException

Scope = dict[str, Any]


def route_pattern(route: str) -> tuple[str, re.Pattern]:
    """'POST /api/sessions/{session_id}/offer' -> ('POST', regex of the path)."""
    method, _, path = route.partition(" ")
    if not path.startswith("/"):
        raise ValueError(f"route {route!r} must be 'METHOD /path' (path parameters as {{name}})")
    regex = "".join(
        "[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]*\})", path)
    )
    return method.upper(), re.compile(f"^{regex}$")


@dataclass
class LimitStats:
    refused: dict[str, int] = field(default_factory=dict)  # by status code
    refused_body_bytes_read: int = 0  # read of refused bodies before the refusal, all together
    lingered_bytes: int = 0  # read and dropped after it (_linger), all together

    def count(self, status: int, bytes_read: int) -> None:
        self.refused[str(status)] = self.refused.get(str(status), 0) + 1
        self.refused_body_bytes_read += bytes_read

    def as_dict(self) -> dict:
        return {"refused": dict(self.refused), "refused_body_bytes_read": self.refused_body_bytes_read,
                "lingered_bytes": self.lingered_bytes}


@dataclass(frozen=True)
class Bound:
    total: int
    per_client: int


class StreamGate:
    """Long-lived requests held now, by kind and by client; `enter` admits one or says why not."""

    RETRY_AFTER_S = 5

    def __init__(self, bounds: Mapping[str, Bound]) -> None:
        self._bounds = dict(bounds)
        self._held: Counter[str] = Counter()
        self._by_client: Counter[tuple[str, str | None]] = Counter()

    def enter(self, kind: str, client: str | None) -> tuple[int, str] | None:
        """None: admitted (call `leave` when it ends); else (status, why)."""
        bound = self._bounds[kind]
        if self._held[kind] >= bound.total:
            return 503, f"this server is serving {bound.total} {kind} requests, the most it allows at once; retry later"
        if self._by_client[kind, client] >= bound.per_client:
            return 429, (f"this address already has {bound.per_client} {kind} request(s) open, the most allowed; "
                         "close one first")
        self._held[kind] += 1
        self._by_client[kind, client] += 1
        return None

    def leave(self, kind: str, client: str | None) -> None:
        self._held[kind] -= 1
        self._by_client[kind, client] -= 1
        if not self._by_client[kind, client]:
            del self._by_client[kind, client]

    def held(self) -> dict[str, int]:
        return {kind: self._held[kind] for kind in self._bounds}


Client = Callable[[str | None, list[str]], str | None]  # (peer, X-Forwarded-For lines) -> quota key


class RequestLimits:
    """What the middleware enforces: a body limit per route (bytes), a default for the rest,
    the routes whose admin token is checked before their body is read, the long-lived routes
    by kind with their bounds, and the slowest a body may arrive."""

    def __init__(
        self,
        body_limits: dict[str, int],
        default_body_bytes: int,
        admin_routes: list[str],
        admin_token_env: str,
        stream_routes: Mapping[str, list[str]] | None = None,
        stream_bounds: Mapping[str, Bound] | None = None,
        client: Client | None = None,
        min_body_bytes_per_s: float = 16 * 1024,
        body_grace_s: float = 5.0,
    ) -> None:
        self._body = [(*route_pattern(route), limit) for route, limit in body_limits.items()]
        self._default = default_body_bytes
        self._admin = [route_pattern(route) for route in admin_routes]
        self._admin_env = admin_token_env
        self._streams = [(*route_pattern(route), kind) for kind, routes in (stream_routes or {}).items()
                         for route in routes]
        self.streams = StreamGate(stream_bounds or {})
        self.client = client or (lambda peer, forwarded: peer)
        self.min_body_bytes_per_s = min_body_bytes_per_s
        self.body_grace_s = body_grace_s
        self.stats = LimitStats()

    def stream_kind(self, method: str, path: str) -> str | None:
        """The long-lived kind of a request ("WS" for a WebSocket), or None for a short one."""
        for m, regex, kind in self._streams:
            if m == method and regex.match(path):
                return kind
        return None

    def body_limit(self, method: str, path: str) -> int:
        for m, regex, limit in self._body:
            if m == method and regex.match(path):
                return limit
        return self._default

    def admin_refusal(self, method: str, path: str, authorization: str | None) -> str | None:
        """Why an admin route refuses this request, or None when it may go on."""
        if not any(m == method and regex.match(path) for m, regex in self._admin):
            return None
        return admin_refusal(authorization, self._admin_env)


def admin_refusal(authorization: str | None, token_env: str) -> str | None:
    """Why `authorization` is not the admin token held in $`token_env`, or None if it is."""
    expected = os.environ.get(token_env)
    if not expected:
        return f"avatar administration is disabled: the server has no admin token (set ${token_env})"
    if not bearer_matches(authorization, expected):
        return "missing or wrong admin token"
    return None


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether the header carries `Bearer <expected>` (compared in constant time)."""
    given = bearer(authorization) or ""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def too_large(limit: int) -> str:
    return f"request body is over this route's limit of {limit} bytes"


_installed: RequestLimits | None = None


def install(limits: RequestLimits) -> None:
    """Called by the Ingress replica once it has the profile. A process-wide setting: Serve
    runs one replica per process, and the FastAPI app it serves may be a copy of the module's
    (Serve pickles it), so the middleware looks here rather than at the app's state."""
    global _installed
    _installed = limits


class LimitsMiddleware:
    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        limits = _installed
        if scope["type"] not in ("http", "websocket") or limits is None:
            return await self.app(scope, receive, send)
        method = scope["method"] if scope["type"] == "http" else "WS"
        path = scope["path"]
        root = scope.get("root_path", "")  # an app under a route prefix sees it in `path` too
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        kind = limits.stream_kind(method, path)
        if kind is None:
            return await self._limited(limits, scope, receive, send, method, path, dict(headers))
        peer = scope["client"][0] if scope.get("client") else None
        client = limits.client(peer, [v for k, v in headers if k == "x-forwarded-for"])
        refusal = limits.streams.enter(kind, client)
        if refusal is not None:
            limits.stats.count(refusal[0], 0)
            if scope["type"] == "websocket":
                return await _refuse_socket(receive, send, refusal[1])
            await _refuse(send, *refusal, retry_after=StreamGate.RETRY_AFTER_S)
            return await _linger(receive, limits.stats)
        try:
            if scope["type"] == "websocket":
                return await self.app(scope, receive, send)
            return await self._limited(limits, scope, receive, send, method, path, dict(headers))
        finally:
            limits.streams.leave(kind, client)

    async def _limited(self, limits: RequestLimits, scope: Scope, receive: Callable, send: Callable,
                       method: str, path: str, headers: dict[str, str]) -> None:
        """An HTTP request under the admin, body-size and body-rate limits."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = limits.admin_refusal(method, path, headers.get("authorization"))
        if refusal is not None:
            limits.stats.count(403, 0)
            await _refuse(send, 403, refusal)
            return await _linger(receive, limits.stats)
        limit = limits.body_limit(method, path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            limits.stats.count(413, 0)
            await _refuse(send, 413, too_large(limit))
            return await _linger(receive, limits.stats)

        loop = asyncio.get_running_loop()
        started = loop.time()
        read = 0
        body_done = False
        refused = False

        async def counted_receive() -> dict:
            nonlocal read, refused, body_done
            if body_done:  # after the body: a disconnect, awaited for as long as the answer streams
                return await receive()
            # The next piece must come before the body falls behind the minimum rate.
            due = started + limits.body_grace_s + read / limits.min_body_bytes_per_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, due - loop.time()))
            except asyncio.TimeoutError:
                limits.stats.count(408, read)
                refused = True
                rate = limits.min_body_bytes_per_s / 1024
                raise HTTPException(408, f"the request body arrived slower than {rate:g} KB/s; send it faster",
                                    headers={"Connection": "close"}) from None
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if read > limit:
                    limits.stats.count(413, read)
                    refused = True
                    # FastAPI re-raises HTTPExceptions from the body read as they are.
                    raise HTTPException(413, too_large(limit), headers={"Connection": "close"})
            else:
                body_done = True
            return message

        await self.app(scope, counted_receive, send)
        if refused:
            await _linger(receive, limits.stats)


LINGER_S = 1.0  # after a refusal, how long the rest of a body is read and dropped, at most
LINGER_BYTES = 4 * 1024 * 1024  # and how much of it


async def _linger(receive: Callable, stats: LimitStats) -> None:
    """Read and drop a little more of a refused body before the connection closes.

    Closing a socket with unread data in it sends a TCP reset, which can destroy an answer
    the client has not read yet: it sees "connection reset", not the 403 or 413 that says
    why. A short, bounded drain (what nginx calls a lingering close) gives the answer time to
    arrive first; the bound keeps it from becoming the read it was meant to avoid, so a client
    that goes on sending past it may still see the reset (Serve's proxy closes the connection
    when this handler returns; we cannot close it more gently from here).
    """
    drained = 0

    async def drain() -> None:
        nonlocal drained
        while drained < LINGER_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(drain(), LINGER_S)
    stats.lingered_bytes += drained


async def _refuse(send: Callable, status: int, detail: str, retry_after: int | None = None) -> None:
    """Answer without reading the body; `Connection: close` so the rest is never read."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455's code for a server that is busy now


async def _refuse_socket(receive: Callable, send: Callable, detail: str) -> None:
    """Accept the WebSocket only to close it at once with 1013 and why: a refused handshake
    tells a browser nothing."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER, "reason": detail[:120]})
