"""WebRTC: the session's media and events to a browser (or aiortc) peer, its mic back.

The peer connection gets two tracks paced by the session's clock (video 25 fps, audio
20 ms, both from the same `AVUnit` per frame), an "events" data channel carrying the events
as JSON (and the client's control messages back), and, when the offer sends one, the mic.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from fractions import Fraction

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender
from av import AudioFrame, VideoFrame

from actors.clock import MediaClock
from actors.errors import BadRequest, SessionConflict
from actors.offer_checks import check_offer
from actors.transports.base import SessionPort
from actors.transports.pacing import MAX_LATE_FRAMES, VideoShedder
from serve_app.engines.audio import StreamResampler
from serve_app.engines.media import FRAME_S, OUTPUT_PER_FRAME, OUTPUT_RATE, SPEECH_RATE
from serve_app.events import Event

log = logging.getLogger(__name__)

OUTPUT_PER_PACKET = OUTPUT_PER_FRAME // 2  # 20 ms
VIDEO_TIME_BASE = Fraction(1, 90_000)
AUDIO_TIME_BASE = Fraction(1, OUTPUT_RATE)
MIC_PREFETCH = 1  # audio packets aiortc holds back before handing one on (its default: 4)
MAX_PENDING_EVENTS = 200  # events kept for a data channel that is not open yet
# An audio packet this late is at risk (a client's jitter buffer absorbs less): video sheds.
AUDIO_LATE_S = 2 * FRAME_S


def shorten_jitter_buffer(receiver) -> bool:
    """Let the mic's packets through after one more has arrived instead of four.

    aiortc's audio receiver keeps 4 packets (80 ms) in its jitter buffer as a playout cushion;
    the VAD plays nothing out, and reordering within the buffer is handled at any prefetch, so
    those 80 ms are pure reply and barge-in latency. aiortc has no option for it: this swaps
    the receiver's (private) buffer before any packet arrives. Returns False, leaving aiortc's
    default, if a future aiortc moved it.
    """
    from aiortc.jitterbuffer import JitterBuffer

    attr = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, attr, None)
    if not isinstance(current, JitterBuffer):
        log.warning("aiortc's receiver has no %s: the mic keeps aiortc's 80 ms buffer", attr)
        return False
    setattr(receiver, attr, JitterBuffer(capacity=current.capacity, prefetch=MIC_PREFETCH))
    return True


class WebRTCTransport:
    """One peer connection of a session (at most one: a second offer is refused)."""

    def __init__(self, port: SessionPort, clock: MediaClock, ice_servers: list[dict],
                 max_candidates: int, candidate_networks: list) -> None:
        self._port = port
        self._clock = clock
        self._ice = RTCConfiguration(iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in ice_servers
        ])
        self._max_candidates = max_candidates
        self._candidate_networks = candidate_networks
        self._pc: RTCPeerConnection | None = None
        self._channel = None
        self._pending: list[str] = []
        self._mic: asyncio.Task | None = None

    @property
    def state(self) -> str:
        return self._pc.connectionState if self._pc else "new"

    async def answer(self, sdp: str, sdp_type: str = "offer") -> dict:
        if self._pc is not None:
            raise SessionConflict("this session already has a peer connection; create a new session")
        sdp, dropped = check_offer(sdp, self._max_candidates, self._candidate_networks)
        if dropped:
            log.info("%d ICE candidates outside candidate_networks dropped", dropped)
        pc = RTCPeerConnection(self._ice)

        @pc.on("connectionstatechange")
        async def _state_changed() -> None:
            if pc is not self._pc:  # a rejected offer's peer closing must not end the session
                return
            if pc.connectionState == "connected":
                await self._port.connected()
            elif pc.connectionState in ("failed", "closed"):
                await self._port.disconnected(f"peer connection {pc.connectionState}")

        pc.on("datachannel", self._on_datachannel)

        @pc.on("track")  # fires inside setRemoteDescription, so registered before it
        def _on_track(track) -> None:
            if track.kind == "audio":  # the user's microphone (a sendrecv audio m-line)
                for transceiver in pc.getTransceivers():
                    if transceiver.receiver.track is track:
                        shorten_jitter_buffer(transceiver.receiver)
                self._mic = asyncio.get_running_loop().create_task(self._hear(track))
        self._pc = pc
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=sdp_type))
            except Exception as exc:
                raise BadRequest(f"malformed SDP offer: {exc or type(exc).__name__}") from None
            self._attach_tracks(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            # Leave nothing half-made: the client may retry with a good offer.
            self._pc = None
            if self._mic is not None:
                self._mic.cancel()
            with contextlib.suppress(Exception):
                await pc.close()
            raise
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def close(self) -> None:
        if self._mic is not None:
            self._mic.cancel()
        if self._pc is not None:
            with contextlib.suppress(Exception):
                await self._pc.close()

    def _attach_tracks(self, pc: RTCPeerConnection) -> None:
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds:
            raise BadRequest("SDP offer has no video m-line; add a recvonly video transceiver")
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                pc.addTrack(AvatarVideoTrack(self._clock))
                vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
                # VP8 encodes ~1.5x faster than H.264 here; the encoder bounds sessions per core.
                with contextlib.suppress(Exception):
                    transceiver.setCodecPreferences(vp8)
            elif transceiver.kind == "audio":
                pc.addTrack(AvatarAudioTrack(self._clock))

    async def _hear(self, track) -> None:
        """The mic track, decoded and resampled to SPEECH_RATE, into the session."""
        resampler: StreamResampler | None = None
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if resampler is None:
                    resampler = StreamResampler(frame.sample_rate, SPEECH_RATE)
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
                await self._port.hear(resampler.push(pcm.astype(np.int16)))

    # --- events ---------------------------------------------------------------------------
    def _on_datachannel(self, channel) -> None:
        self._channel = channel

        @channel.on("message")
        async def _control(message) -> None:
            await self._port.control(message)

        @channel.on("open")
        def _flush() -> None:
            self._send_pending()

        if channel.readyState == "open":
            self._send_pending()

    def send_event(self, event: Event) -> None:
        self._pending.append(event.to_json())
        del self._pending[:-MAX_PENDING_EVENTS]
        self._send_pending()

    def _send_pending(self) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        for message in self._pending:
            with contextlib.suppress(Exception):
                channel.send(message)
        self._pending.clear()


class _ClockedTrack(MediaStreamTrack):
    """Shared pacing: wait until the packet's due time, skip ahead when far behind."""

    period_s: float

    def __init__(self, clock: MediaClock) -> None:
        super().__init__()
        self._clock = clock
        self._next: int | None = None

    def _first_index(self) -> int:
        raise NotImplementedError

    def _count(self, late_s: float, skipped: int) -> None:
        """Note how late a packet was sent (0: on time), or how many were skipped."""

    async def _wait_turn(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        t0 = self._clock.start()
        if self._next is None:
            self._next = self._first_index()
        delay = t0 + self._next * self.period_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
            self._count(0.0, 0)
        elif -delay > MAX_LATE_FRAMES * FRAME_S:
            caught_up = int((time.monotonic() - t0) / self.period_s)
            self._count(-delay, caught_up - self._next)
            self._next = caught_up
        else:
            self._count(-delay, 0)
        index = self._next
        self._next += 1
        return index


class AvatarVideoTrack(_ClockedTrack):
    """Video gives way first: when audio packets start leaving late (the process is short of
    CPU), every other frame is skipped (half the encoding work) until the audio is on time
    again; the audio track shares this process."""

    kind = "video"
    period_s = FRAME_S

    def __init__(self, clock: MediaClock) -> None:
        super().__init__(clock)
        self._shedder = VideoShedder(clock.stats.audio_late)

    def _first_index(self) -> int:
        return self._clock.current_index()

    def _count(self, late_s: float, skipped: int) -> None:
        stats = self._clock.stats
        stats.late_frames += late_s > FRAME_S
        stats.skipped_frames += skipped

    async def recv(self) -> VideoFrame:
        n = await self._wait_turn()
        if self._shedder.stride(self._clock.stats.audio_late) > 1:
            self._clock.stats.skipped_frames += 1
            n = await self._wait_turn()
        unit = self._clock.unit(n)
        frame = VideoFrame.from_ndarray(unit.frame, format="rgb24")
        frame.pts = n * 3600
        frame.time_base = VIDEO_TIME_BASE
        self._clock.video_sent(n, unit)
        return frame


class AvatarAudioTrack(_ClockedTrack):
    kind = "audio"
    period_s = FRAME_S / 2

    def _first_index(self) -> int:
        return 2 * self._clock.current_index()

    def _count(self, late_s: float, skipped: int) -> None:
        self._clock.stats.audio_late += late_s > AUDIO_LATE_S
        self._clock.stats.audio_skipped += skipped

    async def recv(self) -> AudioFrame:
        m = await self._wait_turn()
        unit = self._clock.unit(m // 2)
        half = m % 2
        samples = unit.audio[half * OUTPUT_PER_PACKET : (half + 1) * OUTPUT_PER_PACKET]
        frame = AudioFrame(format="s16", layout="mono", samples=OUTPUT_PER_PACKET)
        frame.planes[0].update(np.ascontiguousarray(samples).tobytes())
        frame.sample_rate = OUTPUT_RATE
        frame.pts = m * OUTPUT_PER_PACKET
        frame.time_base = AUDIO_TIME_BASE
        self._clock.stats.audio_packets += 1
        if half:
            self._clock.audio_done(m // 2)
        return frame
