"""Limits before work: an ASGI middleware that refuses request bodies by size before any
route parses them, and admin routes by token before their body is read.

A body is refused twice over: by its Content-Length at once (413, the body never read), and
by counting the bytes as they stream in (chunked uploads that say no length): past the limit
the read stops with a 413 and the connection is closed. `stats` counts what refused requests
cost the replica, so an operator (and a test) can see that nothing was read to the end.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
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


class RequestLimits:
    """What the middleware enforces: a body limit per route (bytes), a default for the rest,
    and the routes whose admin token is checked before their body is read."""

    def __init__(
        self,
        body_limits: dict[str, int],
        default_body_bytes: int,
        admin_routes: list[str],
        admin_token_env: str,
    ) -> None:
        self._body = [(*route_pattern(route), limit) for route, limit in body_limits.items()]
        self._default = default_body_bytes
        self._admin = [route_pattern(route) for route in admin_routes]
        self._admin_env = admin_token_env
        self.stats = LimitStats()

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
        if scope["type"] != "http" or limits is None:
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        root = scope.get("root_path", "")  # an app under a route prefix sees it in `path` too
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
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

        read = 0
        refused = False

        async def counted_receive() -> dict:
            nonlocal read, refused
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    limits.stats.count(413, read)
                    refused = True
                    # FastAPI re-raises HTTPExceptions from the body read as they are.
                    raise HTTPException(413, too_large(limit), headers={"Connection": "close"})
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


async def _refuse(send: Callable, status: int, detail: str) -> None:
    """Answer without reading the body; `Connection: close` so the rest is never read."""
    body = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
