"""Which address a request came from, for per-client quotas.

Behind a reverse proxy every request comes from the proxy. When the direct peer is in one of
`trusted` networks (the operator's proxies), the client is the right-most address in
`X-Forwarded-For` that is not itself a trusted proxy: each proxy appends what it saw, so
addresses left of the first untrusted one were written by the client and prove nothing.
A header sent several times is one list, in order (RFC 9110): a proxy that adds a line of its
own must not hide the hop it saw behind a line the client wrote.

IPv6 clients are counted by their /64: one host is normally given a whole /64, so counting
each address would give it some 2^64 quotas.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 16  # addresses of X-Forwarded-For looked at (a longer header is not a reason to work more)
IPV6_QUOTA_PREFIX = 64  # IPv6 addresses in one such network are one client


def networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def quota_key(address: str) -> str:
    """The client an address counts as: itself (IPv4), or its /64 (IPv6)."""
    ip = ipaddress.ip_address(address.strip())
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # an IPv4 client on a dual-stack socket
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_QUOTA_PREFIX}", strict=False))
    return str(ip)


def client_address(peer: str | None, forwarded_for: Sequence[str] | str | None,
                   trusted: Sequence[Network]) -> str | None:
    """The client a request counts as for quotas (see quota_key). `forwarded_for`: every
    X-Forwarded-For line of the request, in order."""
    if isinstance(forwarded_for, str):
        forwarded_for = [forwarded_for]
    return _key_or_none(_client(peer, ",".join(forwarded_for or ()), trusted))


def _key_or_none(address: str | None) -> str | None:
    try:
        return quota_key(address) if address else address
    except ValueError:  # not an IP (a test client's or a Unix socket's name)
        return address


def _client(peer: str | None, forwarded_for: str, trusted: Sequence[Network]) -> str | None:
    if peer is None or not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")[-MAX_HOPS:]]
    for hop in reversed(hops):
        if not hop:
            continue
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage where an address should be: fall back to the proxy
    return peer
