"""Requests sent at once, against the real app over loopback: one current turn, one peer
per session (issue 20, "one of each, by construction"). Admission's bursts are in
test_admission.py."""
from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from serve_app.client import ApiError, AvatarSession
from tests.integration.test_session_media import SILENCE_RMS

pytestmark = pytest.mark.integration

LONG_TEXT = "This answer goes on for a long while, one sentence after another, so it cannot end by itself. " * 3


async def test_says_sent_together_leave_one_turn_that_interrupt_silences(app_url):
    session = await AvatarSession(app_url).start()
    try:
        await session.interrupt()  # the greeting out of the way
        turn_ids = await asyncio.gather(*(session.say(LONG_TEXT) for _ in range(3)))
        assert len(set(turn_ids)) == 3
        assert (await session.interrupt()) == {"interrupted": True}
        n = len(session.received.audio)
        await session.wait_until(lambda r: len(r.audio) >= n + 150, timeout=30)  # 3 s after it
        after = [a.rms for a in session.received.audio[n : n + 150]]
        first_silent = next(i for i, rms in enumerate(after) if rms < SILENCE_RMS)
        assert first_silent <= 10, after[:15]
        loud = [i for i, rms in enumerate(after[first_silent + 5 :]) if rms > SILENCE_RMS]
        assert not loud, f"{len(loud)} loud packets after the interrupt: a turn escaped it"
        for turn_id in turn_ids:  # each turn ended, cut by the next request
            end = await session.wait_event(lambda e, t=turn_id: e["type"] == "turn_end" and e["turn_id"] == t)
            assert end["interrupted"] is True
        assert (await session.info())["speaking"] is False
    finally:
        await session.close()


async def test_says_and_asks_sent_together_end_in_one_spoken_turn(app_url):
    """The last request to start wins; every other one's turn ends, and only one speaks."""
    session = await AvatarSession(app_url).start()
    try:
        await session.interrupt()
        turn_ids = await asyncio.gather(session.say(LONG_TEXT), session.ask("Hello there."), session.say("Short."))
        ends = [await session.wait_event(lambda e, t=t: e["type"] == "turn_end" and e["turn_id"] == t, timeout=60)
                for t in turn_ids]
        assert sorted(e["interrupted"] for e in ends) == [False, True, True], ends
        assert (await session.info())["speaking"] is False
    finally:
        await session.close()


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_offers_sent_together_get_one_peer(app_url):
    session = AvatarSession(app_url)
    await session.create()
    peers = [await offer_sdp() for _ in range(4)]
    try:
        async def post(sdp: str) -> int:
            try:
                await session.request("POST", f"/api/sessions/{session.session_id}/offer",
                                      json={"sdp": sdp, "type": "offer"}, headers=session._auth())
                return 200
            except ApiError as error:
                assert error.status != 409 or "already has a peer connection" in error.detail
                return error.status

        statuses = await asyncio.gather(*(post(sdp) for _, sdp in peers))
        assert sorted(statuses) == [200, 409, 409, 409], statuses
        # A fifth, after the race, is refused the same way.
        assert await post(peers[0][1]) == 409
    finally:
        for pc, _ in peers:
            await pc.close()
        await session.close()
