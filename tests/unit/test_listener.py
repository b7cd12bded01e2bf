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


async def test_push_to_talk_held_too_long_is_cut_and_stays_bounded():
    import asyncio

    import av
    import numpy as np
    from aiortc.mediastreams import MediaStreamError

    from actors.listener import MicListener
    from serve_app.engines.vad import create_vad_engine
    from serve_app.engines.vad.detector import UtteranceDetector

    class Mic:  # 20 ms frames of 48 kHz audio, then the track ends
        def __init__(self, seconds: float) -> None:
            self.left = int(seconds * 50)

        async def recv(self):
            if self.left == 0:
                raise MediaStreamError
            self.left -= 1
            frame = av.AudioFrame.from_ndarray(np.full((1, 960), 3000, np.int16), format="s16", layout="mono")
            frame.sample_rate = 48000
            await asyncio.sleep(0)
            return frame

    utterances = []

    async def on_utterance(audio, ended_at, truncated, early):
        utterances.append((len(audio), truncated))

    async def on_speech_start():
        pass

    listener = MicListener(UtteranceDetector(create_vad_engine("energy")), on_speech_start, on_utterance,
                           max_utterance_s=2.0)
    listener.set_mode("push_to_talk")
    await listener.push_to_talk(True)
    mic = Mic(seconds=6.0)  # held three times the limit
    listener.start(mic)
    await asyncio.wait_for(listener._task, 10)
    assert utterances == [(2 * 16000, True)]  # cut at the limit, once
    assert listener._ptt is None  # the rest was not kept
    assert await listener.push_to_talk(False) is False  # the release says nothing more
