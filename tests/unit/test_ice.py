"""TURN credentials: static from the environment, or time-limited by the TURN REST scheme."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from serve_app.config import IceServer
from serve_app.ice import ice_servers, turn_rest_credential


def test_time_limited_credentials_follow_the_turn_rest_scheme(monkeypatch):
    monkeypatch.setenv("TURN_SECRET", "north-wind")
    server = IceServer(urls=["turn:turn.example.org:3478"], auth_secret_env="TURN_SECRET", credential_ttl_s=600)
    [entry] = ice_servers([server], "abc123")
    expiry, user = entry["username"].split(":")
    assert user == "abc123" and int(expiry) > 0
    # What coturn computes with static-auth-secret to check it:
    expected = base64.b64encode(hmac.new(b"north-wind", entry["username"].encode(), hashlib.sha1).digest()).decode()
    assert entry["credential"] == expected
    assert "north-wind" not in str(entry)
    assert turn_rest_credential("s", "u", 600, now=1000.0)[0] == "1600:u"


def test_each_session_gets_its_own_credential(monkeypatch):
    monkeypatch.setenv("TURN_SECRET", "north-wind")
    server = IceServer(urls=["turn:t:3478"], auth_secret_env="TURN_SECRET")
    assert ice_servers([server], "a")[0]["credential"] != ice_servers([server], "b")[0]["credential"]


def test_a_credential_expires_with_its_session(monkeypatch):
    """The default credential_ttl_s (an hour) is longer than a session may live: what is left of
    the session's life bounds it."""
    import time

    monkeypatch.setenv("TURN_SECRET", "north-wind")
    server = IceServer(urls=["turn:t:3478"], auth_secret_env="TURN_SECRET")
    now = time.time()
    expiry = int(ice_servers([server], "a", lifetime_s=120)[0]["username"].split(":")[0])
    assert now + 119 <= expiry <= now + 122
    assert int(ice_servers([server], "a")[0]["username"].split(":")[0]) >= now + 3599  # no session bound given


def test_static_credential_and_stun_only(monkeypatch):
    monkeypatch.setenv("TURN_PASS", "p4ss")
    servers = [IceServer(urls=["stun:s:3478"]),
               IceServer(urls=["turn:t:3478"], username="u", credential_env="TURN_PASS")]
    assert ice_servers(servers, "x") == [{"urls": ["stun:s:3478"]},
                                         {"urls": ["turn:t:3478"], "username": "u", "credential": "p4ss"}]


def test_both_kinds_of_credential_are_refused():
    with pytest.raises(ValueError, match="not both"):
        IceServer(urls=["turn:t"], username="u", auth_secret_env="TURN_SECRET")
