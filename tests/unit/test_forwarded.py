"""The client's address behind trusted reverse proxies (per-client quotas)."""
from __future__ import annotations

import pytest

from serve_app.config import ConfigError, SessionSettings
from serve_app.forwarded import MAX_HOPS, client_address, networks, quota_key

PROXIES = networks(["10.0.0.0/8", "::1/128"])


def test_without_a_trusted_proxy_the_peer_is_the_client():
    assert client_address("203.0.113.7", "198.51.100.1", []) == "203.0.113.7"
    assert client_address("203.0.113.7", "198.51.100.1", PROXIES) == "203.0.113.7"  # not a proxy of ours
    assert client_address("10.0.0.5", None, PROXIES) == "10.0.0.5"


def test_behind_proxies_the_right_most_untrusted_hop_is_the_client():
    assert client_address("10.0.0.5", "198.51.100.1", PROXIES) == "198.51.100.1"
    # The client wrote the left part itself: it cannot pick its own address.
    assert client_address("10.0.0.5", "1.2.3.4, 198.51.100.1, 10.0.0.9", PROXIES) == "198.51.100.1"
    assert client_address("::1", "2001:db8::1", PROXIES) == "2001:db8::/64"


def test_garbage_or_only_proxies_fall_back_to_the_peer():
    assert client_address("10.0.0.5", "not-an-ip", PROXIES) == "10.0.0.5"
    assert client_address("10.0.0.5", "10.1.1.1, 10.2.2.2", PROXIES) == "10.0.0.5"
    # An endless header is read only at its end.
    assert client_address("10.0.0.5", ", ".join(["10.0.0.1"] * (MAX_HOPS + 100)), PROXIES) == "10.0.0.5"


def test_a_bad_network_in_config_is_named():
    with pytest.raises((ConfigError, ValueError), match="trusted_proxies"):
        SessionSettings(trusted_proxies=["10.0.0.0/33"])


def test_every_header_line_is_read_in_order():
    """A client's own X-Forwarded-For line first, the proxy's after it: the proxy's hop counts,
    whatever the client wrote (reading the first line only would trust the client's)."""
    lines = ["6.6.6.6", "198.51.100.1"]
    assert client_address("10.0.0.5", lines, PROXIES) == "198.51.100.1"
    assert client_address("10.0.0.5", ["1.2.3.4, 198.51.100.1", "10.0.0.9"], PROXIES) == "198.51.100.1"
    assert client_address("10.0.0.5", [], PROXIES) == "10.0.0.5"


def test_ipv6_clients_are_counted_by_their_64():
    one_host = [f"2001:db8:1:2::{i:x}" for i in (1, 0xBEEF, 0xFFFF)]
    assert {client_address(a, None, []) for a in one_host} == {"2001:db8:1:2::/64"}
    assert client_address("2001:db8:1:3::1", None, []) != client_address("2001:db8:1:2::1", None, [])
    assert quota_key("::ffff:198.51.100.7") == "198.51.100.7"  # an IPv4 client over a dual stack
    assert quota_key("198.51.100.7") == "198.51.100.7"
    assert client_address("testclient", None, []) == "testclient"  # not an IP: kept as it is
