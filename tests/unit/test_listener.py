"""The mic path's latency tweak on a real aiortc receiver."""
from __future__ import annotations

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from actors.listener import MIC_PREFETCH, shorten_jitter_buffer


def packet(n: int) -> RtpPacket:
    p = RtpPacket(sequence_number=n, timestamp=960 * n)
    p._data = b"opus"  # what the receiver sets after depayloading
    return p


async def test_mic_receiver_hands_packets_on_after_one_more():
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        assert shorten_jitter_buffer(receiver)
        buffer = receiver._RTCRtpReceiver__jitter_buffer
        assert isinstance(buffer, JitterBuffer) and MIC_PREFETCH == 1
        # Packet 0 comes out as soon as packet 1 arrived (aiortc's default waits for packet 4).
        out = [buffer.add(packet(n))[1] for n in range(2)]
        assert out[0] is None and out[1] is not None and out[1].timestamp == 0
    finally:
        await pc.close()


async def test_an_aiortc_without_the_buffer_keeps_its_default():
    class Receiver:  # what a future aiortc might look like
        pass

    assert shorten_jitter_buffer(Receiver()) is False
