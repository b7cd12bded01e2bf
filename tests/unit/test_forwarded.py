"""The client's address behind trusted reverse proxies (per-client quotas)."""
from __future__ import annotations

import pytest

from serve_app.config import ConfigError, SessionSettings
from serve_app.forwarded import MAX_HOPS, client_address, networks

PROXIES = networks(["10.0.0.0/8", "::1/128"])


def test_without_a_trusted_proxy_the_peer_is_the_client():
    assert client_address("203.0.113.7", "198.51.100.1", []) == "203.0.113.7"
    assert client_address("203.0.113.7", "198.51.100.1", PROXIES) == "203.0.113.7"  # not a proxy of ours
    assert client_address("10.0.0.5", None, PROXIES) == "10.0.0.5"


def test_behind_proxies_the_right_most_untrusted_hop_is_the_client():
    assert client_address("10.0.0.5", "198.51.100.1", PROXIES) == "198.51.100.1"
    # The client wrote the left part itself: it cannot pick its own address.
    assert client_address("10.0.0.5", "1.2.3.4, 198.51.100.1, 10.0.0.9", PROXIES) == "198.51.100.1"
    assert client_address("::1", "2001:db8::1", PROXIES) == "2001:db8::1"


def test_garbage_or_only_proxies_fall_back_to_the_peer():
    assert client_address("10.0.0.5", "not-an-ip", PROXIES) == "10.0.0.5"
    assert client_address("10.0.0.5", "10.1.1.1, 10.2.2.2", PROXIES) == "10.0.0.5"
    # An endless header is read only at its end.
    assert client_address("10.0.0.5", ", ".join(["10.0.0.1"] * (MAX_HOPS + 100)), PROXIES) == "10.0.0.5"


def test_a_bad_network_in_config_is_named():
    with pytest.raises((ConfigError, ValueError), match="trusted_proxies"):
        SessionSettings(trusted_proxies=["10.0.0.0/33"])
