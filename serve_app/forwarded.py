"""Which address a request came from, for per-client quotas.

Behind a reverse proxy every request comes from the proxy. When the direct peer is in one of
`trusted` networks (the operator's proxies), the client is the right-most address in
`X-Forwarded-For` that is not itself a trusted proxy: each proxy appends what it saw, so
addresses left of the first untrusted one were written by the client and prove nothing.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 16  # addresses of X-Forwarded-For looked at (a longer header is not a reason to work more)


def networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
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
