"""The mic path: its latency tweak on a real aiortc receiver, and push-to-talk's bound."""
from __future__ import annotations

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from actors.transports.webrtc import MIC_PREFETCH, shorten_jitter_buffer


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


class Hooks:
    """Records what the listener reports (the turn controller's side of ListenerHooks)."""

    def __init__(self) -> None:
        self.calls: list = []

    def maybe_speech(self) -> None:
        self.calls.append("maybe_speech")

    def blip(self) -> None:
        self.calls.append("blip")

    async def speech_started(self) -> None:
        self.calls.append("speech_started")

    def paused(self, audio, ended_at) -> None:
        self.calls.append("paused")

    def went_on(self) -> None:
        self.calls.append("went_on")

    async def utterance(self, audio, ended_at, truncated) -> None:
        self.calls.append(("utterance", len(audio), truncated))


async def test_push_to_talk_held_too_long_is_cut_and_stays_bounded():
    import numpy as np

    from actors.listener import MicListener
    from serve_app.engines.vad import create_vad_engine
    from serve_app.engines.vad.detector import UtteranceDetector

    hooks = Hooks()
    listener = MicListener(UtteranceDetector(create_vad_engine("energy")), hooks, max_utterance_s=2.0)
    listener.set_mode("push_to_talk")
    await listener.push_to_talk(True)
    for _ in range(6 * 50):  # 20 ms frames, held three times the limit
        await listener.push(np.full(320, 0.1, np.float32))
    assert hooks.calls == ["speech_started", ("utterance", 2 * 16000, True)]  # cut at the limit, once
    assert listener._ptt is None  # the rest was not kept
    assert await listener.push_to_talk(False) is False  # the release says nothing more
