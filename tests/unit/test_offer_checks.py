"""An SDP offer is bounded before aiortc sees it: m-lines, candidates, candidate networks."""
from __future__ import annotations

import pytest

from actors.errors import BadRequest
from actors.offer_checks import check_offer

LOCAL = ["127.0.0.0/8", "10.0.0.0/8"]


def offer(videos: int = 1, candidates: tuple[str, ...] = ()) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for i in range(videos):
        lines += ["m=video 9 UDP/TLS/RTP/SAVPF 96", f"a=mid:{i}"]
    lines += ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:a"]
    lines += [f"a=candidate:{i} 1 udp 2122260223 {address} 5000{i} typ host" for i, address in enumerate(candidates)]
    return "\r\n".join(lines) + "\r\n"


def test_one_video_and_one_audio_pass_unchanged():
    sdp = offer(candidates=("127.0.0.1",))
    assert check_offer(sdp, 8, LOCAL) == (sdp, 0)


def test_forty_video_m_lines_are_refused():
    with pytest.raises(BadRequest, match="40 video m-lines"):
        check_offer(offer(videos=40), 8, LOCAL)


def test_too_many_candidates_are_refused():
    with pytest.raises(BadRequest, match="9 ICE candidates; the limit is 8"):
        check_offer(offer(candidates=("127.0.0.1",) * 9), 8, LOCAL)


def test_candidates_outside_the_allowed_networks_are_dropped():
    sdp, dropped = check_offer(offer(candidates=("127.0.0.1", "8.8.8.8", "10.1.2.3", "some.host", "abc.local")), 8, LOCAL)
    assert dropped == 2
    assert "8.8.8.8" not in sdp and "some.host" not in sdp
    assert "127.0.0.1" in sdp and "10.1.2.3" in sdp and "abc.local" in sdp  # mDNS names stay
