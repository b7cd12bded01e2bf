"""ICE servers as a client and a session actor use them, with TURN credentials filled in.

A static TURN password (`credential_env`) is handed to every browser that opens a session,
so anyone who opened one can relay through the TURN server for as long as it is unchanged.
With `auth_secret_env` the server instead issues time-limited credentials by the TURN REST
scheme that coturn implements as `use-auth-secret` / `static-auth-secret`: the username is
"<expiry unix time>:<session id>" and the password is base64(HMAC-SHA1(secret, username)), so
the TURN server can check it with the shared secret alone and refuses it once expired.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from typing import Any

from serve_app.config import IceServer


def turn_rest_credential(secret: str, user: str, ttl_s: float, now: float | None = None) -> tuple[str, str]:
    """(username, password) valid for `ttl_s` from `now` under the TURN REST scheme."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(servers: list[IceServer], user: str, lifetime_s: float | None = None) -> list[dict[str, Any]]:
    """`urls`, `username`, `credential` per server; secrets read from the environment now.
    `lifetime_s`: what is left of the session's life; an issued credential expires with it
    (or sooner, at the server's `credential_ttl_s`), never after."""
    result = []
    for server in servers:
        entry: dict[str, Any] = {"urls": server.urls}
        if server.auth_secret_env:
            secret = os.environ.get(server.auth_secret_env, "")
            if secret:
                ttl = server.credential_ttl_s if lifetime_s is None else min(server.credential_ttl_s, lifetime_s)
                entry["username"], entry["credential"] = turn_rest_credential(secret, user, max(ttl, 0.0))
        else:
            if server.username:
                entry["username"] = server.username
            if server.credential_env:
                entry["credential"] = os.environ.get(server.credential_env, "")
        result.append(entry)
    return result
