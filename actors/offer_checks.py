"""What an SDP offer may ask of the server, checked before aiortc sees it.

Each m-line costs an encoder or a decoder, and each remote ICE candidate is probed with STUN
packets from the server: an offer is the client's way to make the server do work, so it is
bounded. At most one audio and one video m-line (plus the data channel); a bounded number of
candidates; candidates outside the allowed networks are dropped (the server never probes
them). mDNS host names (`*.local`, what browsers send to hide local addresses) resolve only
on the local link and are kept.
"""
from __future__ import annotations

import ipaddress
from collections import Counter

from actors.errors import BadRequest

MAX_MEDIA = {"audio": 1, "video": 1, "application": 1}


def check_offer(sdp: str, max_candidates: int, allowed_networks: list[str]) -> tuple[str, int]:
    """The offer with disallowed candidates removed, and how many were removed; BadRequest
    for an offer that asks for too much."""
    lines = sdp.splitlines()
    media = Counter(line[2:].split(" ", 1)[0] for line in lines if line.startswith("m="))
    for kind, count in media.items():
        allowed = MAX_MEDIA.get(kind, 0)
        if count > allowed:
            raise BadRequest(
                f"SDP offer has {count} {kind} m-lines; a session takes at most "
                + (f"{allowed}" if allowed else "none of that kind")
            )
    candidates = [line for line in lines if line.startswith("a=candidate:")]
    if len(candidates) > max_candidates:
        raise BadRequest(f"SDP offer has {len(candidates)} ICE candidates; the limit is {max_candidates}")
    networks = [ipaddress.ip_network(n) for n in allowed_networks]
    kept, dropped = [], 0
    for line in lines:
        if line.startswith("a=candidate:") and not _allowed(line, networks):
            dropped += 1
            continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


def _allowed(candidate_line: str, networks: list) -> bool:
    # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    fields = candidate_line.split()
    if len(fields) < 8:
        return False
    address = fields[4]
    if address.lower().endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # another host name: the server would have to resolve it
    return any(ip in network for network in networks)
