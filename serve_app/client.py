"""A Python client for the session API: REST calls plus a real aiortc peer that receives the
avatar's video and audio. Used by the integration tests and the benchmarks, and handy for
scripting a session from another service.

    async with AvatarSession("http://127.0.0.1:8000") as s:
        await s.connect()
        await s.say("Hello!")
"""
from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from serve_app.events import CHANNEL_LOST_S, CHANNEL_PING_S

MIC_RATE = 48_000
MIC_PACKET = 960  # 20 ms


class MicTrack(MediaStreamTrack):
    """A microphone for scripts and tests: sends silence in real time until `play()` is given
    audio, which it then sends exactly once. `played_until(i)` tells when sample i went out."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._packets = 0
        self.sent_samples = 0  # non-silent samples sent so far, across all play() calls
        self._marks: list[tuple[int, asyncio.Future]] = []

    def play(self, audio: np.ndarray, sample_rate: int = MIC_RATE) -> None:
        """Queue mono audio (float in [-1, 1] or int16) after anything still queued."""
        if audio.dtype != np.int16:
            audio = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        if sample_rate != MIC_RATE:
            positions = np.arange(0, len(audio) - 1, sample_rate / MIC_RATE)
            audio = np.interp(positions, np.arange(len(audio)), audio).astype(np.int16)
        self._queue = np.concatenate([self._queue, audio])

    def queued_s(self) -> float:
        return len(self._queue) / MIC_RATE

    async def drained(self) -> float:
        """Wait until everything queued has been sent; returns the monotonic time it ended."""
        future = asyncio.get_running_loop().create_future()
        self._marks.append((self.sent_samples + len(self._queue), future))
        return await future

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._packets * MIC_PACKET / MIC_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        chunk, self._queue = self._queue[:MIC_PACKET], self._queue[MIC_PACKET:]
        self.sent_samples += len(chunk)
        for target, future in list(self._marks):
            if self.sent_samples >= target and not future.done():
                future.set_result(time.monotonic())
                self._marks.remove((target, future))
        pcm = np.zeros(MIC_PACKET, dtype=np.int16)
        pcm[: len(chunk)] = chunk
        frame = AudioFrame(format="s16", layout="mono", samples=MIC_PACKET)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = MIC_RATE
        frame.pts = self._packets * MIC_PACKET
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._packets += 1
        return frame


@dataclass
class ReceivedVideo:
    t: float  # monotonic arrival time
    pts: int
    frame: np.ndarray | None  # RGB, kept only when the session keeps frames


@dataclass
class ReceivedAudio:
    t: float
    pts: int
    rms: float  # of the 20 ms frame, int16 scale


@dataclass
class Received:
    video: list[ReceivedVideo] = field(default_factory=list)
    audio: list[ReceivedAudio] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: httpx.Headers) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.headers = headers


class AvatarSession:
    """One session. `keep_frames` decides whether received RGB frames are stored
    (tests inspect pixels; the benchmark only counts)."""

    def __init__(
        self,
        base_url: str,
        avatar: str | None = None,
        character: str | None = None,
        keep_frames: bool | Callable[[np.ndarray], np.ndarray] = False,
        mic: MediaStreamTrack | None = None,
        create_key: str | None = None,
        request_timeout: float = 30,
    ) -> None:
        """`create_key`: the server's session-creation key, when it has one
        (`sessions.create_token_env`). `request_timeout`: for each REST call; creating a
        session on a cluster that must start a node for it takes up to `sessions.start_timeout_s`."""
        self.http = httpx.AsyncClient(base_url=base_url, timeout=request_timeout)
        self.create_key = create_key
        self.avatar = avatar
        self.character = character
        self.keep_frames = keep_frames
        self.mic = mic
        self.channel = None
        self.session_id: str | None = None
        self.token: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.received = Received()
        self.lost = False  # the server stopped answering pings: the session is gone
        self._last_pong = time.monotonic()
        self._tasks: list[asyncio.Task] = []
        self._event_waiters: list[tuple[Callable[[dict], bool], asyncio.Future]] = []
        self._arrivals = asyncio.Condition()  # notified on every received frame and event

    async def __aenter__(self) -> "AvatarSession":
        await self.create()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # --- REST ---------------------------------------------------------------------------
    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, str(detail), response.headers)
        return response

    async def create(self) -> dict:
        body = {k: v for k, v in (("avatar", self.avatar), ("character", self.character)) if v}
        headers = {"Authorization": f"Bearer {self.create_key}"} if self.create_key else {}
        created = (await self.request("POST", "/api/sessions", json=body, headers=headers)).json()
        self.session_id, self.token = created["session_id"], created["token"]
        return created

    async def say(self, text: str) -> str:
        response = await self.request(
            "POST", f"/api/sessions/{self.session_id}/say", json={"text": text}, headers=self._auth()
        )
        return response.json()["turn_id"]

    async def ask(self, text: str) -> str:
        response = await self.request(
            "POST", f"/api/sessions/{self.session_id}/ask", json={"text": text}, headers=self._auth()
        )
        return response.json()["turn_id"]

    async def update(self, avatar: str | None = None, voice: str | None = None) -> dict:
        body = {k: v for k, v in (("avatar", avatar), ("voice", voice)) if v}
        return (
            await self.request("PATCH", f"/api/sessions/{self.session_id}", json=body, headers=self._auth())
        ).json()

    async def info(self) -> dict:
        return (await self.request("GET", f"/api/sessions/{self.session_id}", headers=self._auth())).json()

    async def interrupt(self) -> dict:
        return (
            await self.request("POST", f"/api/sessions/{self.session_id}/interrupt", headers=self._auth())
        ).json()

    async def delete(self) -> None:
        await self.request("DELETE", f"/api/sessions/{self.session_id}", headers=self._auth())

    # --- WebRTC -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Offer recvonly video, audio (sendrecv with the mic, if any) and an events data
        channel; start receiving."""
        pc = self.pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        if self.mic is not None:
            pc.addTransceiver(self.mic, direction="sendrecv")
        else:
            pc.addTransceiver("audio", direction="recvonly")
        channel = self.channel = pc.createDataChannel("events")
        channel.on("message", self._on_event)
        channel.on("open", lambda: self._tasks.append(asyncio.ensure_future(self._heartbeat(pc, channel))))
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        answer = (
            await self.request(
                "POST",
                f"/api/sessions/{self.session_id}/offer",
                json={"sdp": pc.localDescription.sdp, "type": "offer"},
                headers=self._auth(),
            )
        ).json()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def start(self, timeout: float = 30) -> "AvatarSession":
        """Create the session, connect the peer and wait until the server says it is ready."""
        await self.create()
        await self.connect()
        await self.wait_event(lambda e: e["type"] == "ready", timeout)
        return self

    async def reconnect(self, timeout: float = 30) -> dict:
        """After `lost` (the session's actor died, say with its node): offer again with the
        token. The server resumes the session on a new actor with its history; the answer is
        the new connection's `ready` event (`resumed` true when it came from the store)."""
        if self.pc is not None:
            await self.pc.close()
        self.lost = False
        since = time.monotonic()
        await self.connect()
        return await self.wait_event(lambda e: e["type"] == "ready" and e["received_at"] >= since, timeout)

    async def _heartbeat(self, pc: RTCPeerConnection, channel) -> None:
        """Ping on the data channel; no pong for CHANNEL_LOST_S: the session is gone (its
        actor died), so the peer is closed and `lost` set, long before ICE would notice."""
        self._last_pong = time.monotonic()
        while True:
            with contextlib.suppress(Exception):  # a channel closing under us: caught below
                channel.send(json.dumps({"type": "ping"}))
            await asyncio.sleep(CHANNEL_PING_S)
            if pc.connectionState == "closed":
                return  # replaced by reconnect(), or closed: not this peer's pongs to judge
            if time.monotonic() - self._last_pong > CHANNEL_LOST_S:
                self.lost = True
                await pc.close()
                return

    def _on_event(self, message: str) -> None:
        event = json.loads(message)
        if event.get("type") == "pong":
            self._last_pong = time.monotonic()
            return
        event["received_at"] = time.monotonic()
        self.received.events.append(event)
        for predicate, future in list(self._event_waiters):
            if not future.done() and predicate(event):
                future.set_result(event)
        asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self._arrivals:
            self._arrivals.notify_all()

    async def wait_until(self, predicate: Callable[[Received], bool], timeout: float = 30) -> None:
        """Wait until `predicate(self.received)` holds, re-checking as media and events arrive."""
        async with self._arrivals:
            await asyncio.wait_for(self._arrivals.wait_for(lambda: predicate(self.received)), timeout)

    def _on_track(self, track) -> None:
        consume = self._consume_video if track.kind == "video" else self._consume_audio
        self._tasks.append(asyncio.ensure_future(consume(track)))

    async def _consume_video(self, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                image = None
                if self.keep_frames:
                    image = frame.to_ndarray(format="rgb24")
                    if callable(self.keep_frames):
                        image = self.keep_frames(image)
                self.received.video.append(ReceivedVideo(time.monotonic(), frame.pts, image))
                await self._notify()

    async def _consume_audio(self, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().astype(np.float32)
                rms = float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0
                self.received.audio.append(ReceivedAudio(time.monotonic(), frame.pts, rms))
                await self._notify()

    def send_control(self, message: dict) -> None:
        """Client -> server control on the data channel: {"type": "mic_mode", "mode": ...},
        {"type": "ptt", "down": bool}."""
        self.channel.send(json.dumps(message))

    async def wait_event(self, predicate: Callable[[dict], bool], timeout: float = 30) -> dict:
        """The first event (already received or arriving) for which `predicate` is true."""
        for event in self.received.events:
            if predicate(event):
                return event
        future = asyncio.get_running_loop().create_future()
        self._event_waiters.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._event_waiters.remove((predicate, future))

    async def close(self, delete: bool = True) -> None:
        if delete and self.session_id:
            with contextlib.suppress(ApiError, httpx.HTTPError):
                await self.delete()
        if self.pc is not None:
            await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await self.http.aclose()


# --- WebSocket sessions ---------------------------------------------------------------------
SOCKET_AUDIO, SOCKET_JPEG = 1, 2  # binary message kinds (actors/transports/websocket.py)
SOCKET_HEADER = struct.Struct("<BI")


@dataclass
class SocketFrame:
    frame: int  # the session clock's frame index: plays at frame * 40 ms
    t: float  # time.monotonic() on arrival
    rms: float = 0.0  # audio: of the 40 ms, int16 scale
    data: bytes | None = None  # JPEG bytes (when keep_frames)


class SocketSession(AvatarSession):
    """A session over one WebSocket (`GET /ws/sessions/{id}`): events, audio, and the face
    as JPEG frames or mouth keyframes. REST calls (say, ask, ...) work as on AvatarSession;
    `send` speaks the socket's own messages. Acks every `ack_every` frames (flow control);
    `pause_reading()` stops reading the socket altogether (a client that hung)."""

    def __init__(self, base_url: str, face: str = "jpeg", ack_every: int = 5, **kwargs) -> None:
        super().__init__(base_url, **kwargs)
        self.face = face
        self.ack_every = ack_every
        self.ws = None
        self.welcome: dict | None = None
        self.audio: list[SocketFrame] = []
        self.jpegs: list[SocketFrame] = []
        self.mouths: list[dict] = []
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._acked = -1
        self._reading = asyncio.Event()
        self._reading.set()
        self._reader: asyncio.Task | None = None

    def socket_url(self) -> str:
        return str(self.http.base_url).replace("http", "ws", 1).rstrip("/") + f"/ws/sessions/{self.session_id}"

    async def connect(self, token: str | None = None, hello: dict | None = None) -> dict | None:
        """Open the socket and say hello (with `token`, default this session's); returns the
        welcome, or None when the server closed instead (see close_code, close_reason)."""
        import websockets

        self.ws = await websockets.connect(self.socket_url(), max_size=2**22, ping_interval=None)
        await self.ws.send(json.dumps(hello or {"type": "hello", "token": token or self.token, "face": self.face}))
        try:
            first = await self.ws.recv()
        except websockets.ConnectionClosed as exc:
            self._closed(exc)
            return None
        self.welcome = json.loads(first)
        self._acked = self.welcome["first_frame"] - 1
        self._reader = asyncio.ensure_future(self._read())
        return self.welcome

    async def start(self, timeout: float = 30) -> "SocketSession":
        await self.create()
        await self.connect()
        await self.wait_event(lambda e: e["type"] == "ready", timeout)
        return self

    def _closed(self, exc) -> None:
        rcvd = getattr(exc, "rcvd", None)
        self.close_code = rcvd.code if rcvd else getattr(exc, "code", None)
        self.close_reason = rcvd.reason if rcvd else ""

    async def _read(self) -> None:
        import websockets

        try:
            while True:
                await self._reading.wait()
                message = await self.ws.recv()
                if isinstance(message, bytes):
                    self._on_media(message)
                else:
                    self._on_text(message)
                await self._notify()
        except websockets.ConnectionClosed as exc:
            self._closed(exc)
            await self._notify()

    def _on_text(self, text: str) -> None:
        message = json.loads(text)
        kind = message.get("type")
        if kind == "ping":
            asyncio.ensure_future(self.send({"type": "pong"}))
        elif kind == "mouth":
            message["received_at"] = time.monotonic()
            self.mouths.append(message)
            self._took(message["frame"])
        elif kind != "pong":
            self._on_event(text)

    def _on_media(self, data: bytes) -> None:
        kind, frame = SOCKET_HEADER.unpack_from(data)
        payload = data[SOCKET_HEADER.size:]
        if kind == SOCKET_AUDIO:
            pcm = np.frombuffer(payload, np.int16).astype(np.float32)
            rms = float(np.sqrt(np.mean(pcm**2))) if pcm.size else 0.0
            self.audio.append(SocketFrame(frame, time.monotonic(), rms))
        elif kind == SOCKET_JPEG:
            self.jpegs.append(SocketFrame(frame, time.monotonic(), data=payload if self.keep_frames else None))
        self._took(frame)

    def _took(self, frame: int) -> None:
        if self.ack_every and frame - self._acked >= self.ack_every:
            self._acked = frame
            asyncio.ensure_future(self.send({"type": "ack", "frame": frame}))

    async def send(self, message: dict | str | bytes) -> None:
        """A message as JSON (dict), raw text (str) or binary (bytes: mic audio)."""
        import websockets

        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(message if isinstance(message, (bytes, str)) else json.dumps(message))

    async def send_audio(self, pcm16: np.ndarray, frame_samples: int = 320) -> None:
        """Mic audio, PCM16 mono 16 kHz, in 20 ms binary messages, as fast as the socket takes
        them (pace it yourself for real time)."""
        data = np.ascontiguousarray(pcm16, np.int16)
        for start in range(0, len(data), frame_samples):
            await self.send(data[start:start + frame_samples].tobytes())

    def pause_reading(self) -> None:
        self._reading.clear()

    async def wait_until(self, predicate, timeout: float = 30) -> None:
        """Wait until `predicate(self)` holds, re-checking as messages arrive."""
        async with self._arrivals:
            await asyncio.wait_for(self._arrivals.wait_for(lambda: predicate(self)), timeout)

    async def wait_closed(self, timeout: float = 30) -> int | None:
        await self.wait_until(lambda s: s.close_code is not None, timeout)
        return self.close_code

    async def disconnect(self) -> None:
        """Close the socket only (the session stays, for a resume)."""
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()

    async def close(self, delete: bool = True) -> None:
        await self.disconnect()
        await super().close(delete)
