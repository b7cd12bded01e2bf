"""SessionActor: one per browser session. Owns the peer connection, the A/V clock and the turns.

The actor is started ahead of time in a warm pool (named `session:<id>`), then activated with
the session's token hash, avatar and character. It ends itself when the peer disconnects, when
no peer connects in time, or after an idle TTL; the session manager awaits `wait_closed()` and
then kills the process, so nothing outlives a session.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpsender import RTCRtpSender

from actors.conversation import Conversation, prefill, reply
from actors.errors import (
    BadRequest, InvalidChoice, RateLimited, SessionConflict, SessionForbidden, SessionNotFound,
)
from actors.listener import MicListener, shorten_jitter_buffer
from actors.media import AvatarAudioTrack, AvatarVideoTrack, AVUnit, MediaClock
from actors.metrics import FrameCounters, record_marks, speculative_replies
from actors.offer_checks import check_offer
from actors.rate_limit import TokenBucket
from actors.speculation import Gate
from actors.turn import Marks, Turn, single
from serve_app.config import Character, Profile
from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.vad import create_vad_engine
from serve_app.engines.vad.detector import UtteranceDetector
from serve_app.ice import ice_servers

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 200  # events kept for a data channel that is not open yet


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def actor_name(session_id: str) -> str:
    return f"session:{session_id}"


@dataclass
class Stages:
    """Handles to the model deployments a session calls."""

    tts: Any
    lipsync: Any
    asr: Any
    llm: Any


class SessionActor:
    def __init__(self, session_id: str, profile: Profile, stages: Stages) -> None:
        self.id = session_id
        self._profile = profile
        self._settings = profile.sessions
        self._stages = stages
        # The session renders its own idle frames (sprite compositing, or the avatar's video
        # frames) so idling costs no remote calls and no model; talking frames come from the
        # LipSync deployment, whatever its backend. Neural engines idle on the same frames.
        self._idle_engine = create_lipsync_engine("viseme", avatars_dir=profile.avatars_dir)
        self._audio_context = (0, 0)  # the lip-sync engine's (context, look-ahead) frames
        self._token_hash: str | None = None
        self._avatar_id = profile.default_avatar
        self._voice: str | None = None
        self._character: Character | None = None
        self._conversation: Conversation | None = None
        self._listener: MicListener | None = None
        self._pc: RTCPeerConnection | None = None
        self._clock: MediaClock | None = None
        self._channel = None
        self._pending_events: list[str] = []
        self._turn: Turn | None = None
        self._speculations = {"started": 0, "confirmed": 0}
        self._greeted = False
        self._warned_expiry = False
        self._activated = 0.0
        self._last_activity = 0.0
        self._closed: asyncio.Future | None = None
        self._watchdog: asyncio.Task | None = None
        self._close_reason = ""
        self._frame_counters = FrameCounters()
        self._turn_requests = TokenBucket(self._settings.turn_requests_per_min / 60, self._settings.turn_requests_burst)
        self._control_rate = TokenBucket(self._settings.control_messages_per_s,
                                         max(1, int(self._settings.control_messages_per_s)))
        self._control_dropped = 0  # data-channel messages over the size or rate limit, or malformed
        self._timeouts = {stage: getattr(profile, stage).timeout_s for stage in ("asr", "llm", "tts", "lipsync")}

    # --- lifecycle --------------------------------------------------------------------
    async def ready(self) -> bool:
        self._closed = asyncio.get_running_loop().create_future()
        self._audio_context = tuple(await self._stages.lipsync.audio_context.remote())
        return True

    async def activate(self, token_sha256: str, avatar_id: str, character: Character) -> dict:
        if self._token_hash is not None:
            raise SessionConflict("session already active")
        try:
            self._idle_engine.idle_frame(avatar_id, 0)  # loads and checks the avatar
        except (KeyError, ValueError) as exc:
            raise InvalidChoice(str(exc.args[0] if exc.args else exc)) from None
        self._avatar_id = avatar_id
        self._voice = character.voice
        self._character = character
        self._conversation = Conversation(character, self._profile.llm.history_turns, self.id)
        prefill(self._stages.llm, self._conversation, self._profile.llm.max_tokens)
        self._token_hash = token_sha256
        self._activated = self._last_activity = time.monotonic()
        self._clock = MediaClock(
            idle_frame=lambda n: self._idle_engine.idle_frame(self._avatar_id, n),
            max_frames_ahead=self._settings.max_frames_ahead,
            on_video_sent=self._on_video_sent,
        )
        self._listener = self._make_listener()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        return {"session_id": self.id, "avatar": avatar_id, "character": character.id}

    async def wait_closed(self) -> str:
        """Resolves with the reason once the session has ended (the manager awaits this)."""
        return await asyncio.shield(self._closed)

    async def close(self, reason: str = "closed") -> None:
        if self._closed is None or self._closed.done() or self._close_reason:
            return  # idempotent: a second close (DELETE racing a hang-up) does nothing
        self._close_reason = reason
        log.info("session %s closing: %s", self.id, reason)
        if self._turn is not None:
            await self._turn.cancel()
        if self._listener is not None:
            self._listener.stop()  # also aborts a reply started in a pause
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        if self._pc is not None:
            with contextlib.suppress(Exception):
                await self._pc.close()
        self._closed.set_result(reason)

    async def _watch(self) -> None:
        """Ends sessions whose peer never connects or that stay idle past the TTL."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            stats = self._clock.stats
            self._frame_counters.update(
                {"sent": stats.video_frames, "speech": stats.speech_frames,
                 "late": stats.late_frames, "skipped": stats.skipped_frames}
            )
            if self._pc is not None and self._pc.connectionState == "connected":
                self._last_activity = now  # flowing media keeps a session alive
            age = now - self._activated
            if age >= self._settings.max_lifetime_s:
                await self.close("the session reached its maximum lifetime")
                return
            if not self._warned_expiry and age >= self._settings.max_lifetime_s - self._settings.lifetime_warning_s:
                self._warned_expiry = True
                self._emit({"type": "session_expiring",
                            "seconds_left": round(self._settings.max_lifetime_s - age),
                            "message": "this session ends soon (its maximum lifetime); start a new one to go on"})
            if not self._greeted and now - self._activated > self._settings.connect_timeout_s:
                await self.close("no WebRTC connection within the connect timeout")
                return
            if now - self._last_activity > self._settings.idle_ttl_s:
                await self.close("idle past the session TTL")
                return

    # --- requests (all need the token) ---------------------------------------------------
    def _authorize(self, token: str | None) -> None:
        if self._token_hash is None or self._closed is None or self._closed.done():
            raise SessionNotFound(f"session {self.id} not found")
        if not token or not hmac.compare_digest(token_hash(token), self._token_hash):
            raise SessionForbidden()
        self._last_activity = time.monotonic()

    def _rate_limit(self) -> None:
        """say, ask and PATCH: each may start work on the model replicas."""
        wait = self._turn_requests.take()
        if wait:
            raise RateLimited(
                f"too many requests for this session (limit {self._settings.turn_requests_per_min:g} a minute); "
                "slow down", max(1, round(wait)))

    async def offer(self, token: str | None, sdp: str, sdp_type: str = "offer") -> dict:
        self._authorize(token)
        if self._pc is not None:
            raise SessionConflict("this session already has a peer connection; create a new session")
        sdp, dropped = check_offer(sdp, self._settings.max_offer_candidates, self._settings.candidate_networks)
        if dropped:
            log.info("session %s: %d ICE candidates outside candidate_networks dropped", self.id, dropped)
        pc = RTCPeerConnection(self._ice_configuration())

        @pc.on("connectionstatechange")
        async def _state_changed() -> None:
            if pc is self._pc:  # a rejected offer's peer closing must not end the session
                await self._on_connection_state(pc.connectionState)

        pc.on("datachannel", self._on_datachannel)

        @pc.on("track")  # fires inside setRemoteDescription, so registered before it
        def _on_track(track) -> None:
            if track.kind == "audio":  # the user's microphone (a sendrecv audio m-line)
                for transceiver in pc.getTransceivers():
                    if transceiver.receiver.track is track:
                        shorten_jitter_buffer(transceiver.receiver)
                self._listener.start(track)
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
            with contextlib.suppress(Exception):
                await pc.close()
            raise
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    async def say(self, token: str | None, text: str) -> dict:
        self._authorize(token)
        self._rate_limit()
        return await self._start_turn(text, interrupt=True)

    async def ask(self, token: str | None, text: str) -> dict:
        """A typed message to the character: answered by the LLM, like a spoken one."""
        self._authorize(token)
        self._rate_limit()
        await self._interrupt()
        turn = self._start_reply(Marks("request"), text=text)
        return {"turn_id": turn.id}

    async def interrupt(self, token: str | None) -> dict:
        self._authorize(token)
        return {"interrupted": await self._interrupt()}

    async def update(self, token: str | None, avatar: str | None, voice: str | None) -> dict:
        """Switch avatar and/or voice. A reply in progress is cut: its frames show the old face."""
        self._authorize(token)
        self._rate_limit()
        if voice is not None:
            voices = await self._stages.tts.voices.remote()
            if voice not in voices:
                raise InvalidChoice(f"unknown voice {voice!r}; available: {voices}")
        if avatar is not None:
            try:
                self._idle_engine.idle_frame(avatar, 0)  # loads and checks it
            except (KeyError, ValueError) as exc:
                raise InvalidChoice(str(exc.args[0] if exc.args else exc)) from None
        await self._interrupt()
        # A reply started in a pause would answer with the old face or voice; if the pause
        # then ends the utterance, it gets a fresh reply.
        self._listener.discard_speculation()
        self._avatar_id = avatar or self._avatar_id
        self._voice = voice or self._voice
        self._emit({"type": "session", "avatar": self._avatar_id, "voice": self._voice})
        return {"avatar": self._avatar_id, "voice": self._voice}

    async def info(self, token: str | None) -> dict:
        self._authorize(token)
        return self._info()

    async def stats(self) -> dict:
        """Unauthenticated, for the manager and metrics: no secrets in here."""
        return self._info()

    def _info(self) -> dict:
        clock = self._clock.stats if self._clock else None
        return {
            "session_id": self.id,
            "avatar": self._avatar_id,
            "voice": self._voice,
            "character": self._character.id if self._character else None,
            "connection": self._pc.connectionState if self._pc else "new",
            "speaking": self._turn is not None and not self._turn.done,
            "video_frames": clock.video_frames if clock else 0,
            "speech_frames": clock.speech_frames if clock else 0,
            "late_frames": clock.late_frames if clock else 0,
            "speculative_replies": dict(self._speculations),
            "control_messages_dropped": self._control_dropped,
        }

    # --- turns ----------------------------------------------------------------------------
    async def _start_turn(self, text: str, interrupt: bool) -> dict:
        """A text turn (`say`, the greeting): speak `text` as given."""
        if interrupt:
            await self._interrupt()
        turn = self._begin_turn(lambda turn_id, marks, gate: single(text), Marks("request"))
        self._emit({"type": "assistant_text", "text": text, "turn_id": turn.id})
        return {"turn_id": turn.id}

    def _begin_turn(self, source, marks: Marks) -> Turn:
        turn = self._new_turn(source, marks, Gate(self._emit, opened=True))
        turn.start()
        self._adopt(turn)
        return turn

    def _new_turn(self, source, marks: Marks, gate: Gate) -> Turn:
        """A turn whose events and frames pass `gate` (closed for a speculative reply)."""
        turn_id = uuid.uuid4().hex[:12]
        return Turn(
            turn_id,
            source(turn_id, marks, gate),
            marks=marks,
            voice=self._voice,
            avatar_id=self._avatar_id,
            tts=self._stages.tts,
            lipsync=self._stages.lipsync,
            clock=self._clock,
            chunk_frames=self._profile.lipsync.chunk_frames,
            audio_context=self._audio_context,
            timeouts=self._timeouts,
            on_error=lambda stage, message: gate.emit(
                {"type": "error", "stage": stage, "turn_id": turn_id, "message": message}),
            gate=gate,
        )

    def _adopt(self, turn: Turn) -> None:
        """Make `turn` the session's current one: the client sees it from here on."""
        self._turn = turn
        self._emit({"type": "state", "state": "thinking", "turn_id": turn.id})
        turn.gate.open()
        asyncio.get_running_loop().create_task(self._finish_silent_turn(turn))

    # --- voice ----------------------------------------------------------------------------
    def _make_listener(self) -> MicListener:
        vad = self._profile.vad
        detector = UtteranceDetector(
            create_vad_engine(vad.backend, **vad.options),
            start_threshold=vad.start_threshold,
            end_threshold=vad.end_threshold,
            min_speech_ms=vad.min_speech_ms,
            end_silence_ms=vad.end_silence_ms,
            max_utterance_s=vad.max_utterance_s,
            pre_roll_ms=vad.pre_roll_ms,
        )
        return MicListener(
            detector,
            self._on_speech_start,
            self._on_utterance,
            vad.max_utterance_s,
            on_maybe_speech=self._on_maybe_speech,
            on_blip=self._clock.resume,
            on_pause=self._speculate if vad.speculate_after_ms else None,
            speculate_after_s=vad.speculate_after_ms / 1000,
        )

    def _on_maybe_speech(self) -> None:
        """The first voiced frame: silence the avatar now; cancel once the VAD is sure."""
        if self._turn is not None:
            self._clock.hold()

    async def _on_speech_start(self) -> None:
        """The user started talking: barge in on whatever the avatar is doing."""
        if await self._interrupt():
            self._emit({"type": "barge_in"})
        self._emit({"type": "state", "state": "listening"})

    async def _on_utterance(self, audio, ended_at: float, truncated: bool, early=None) -> None:
        self._last_activity = time.monotonic()
        if truncated:
            self._emit({
                "type": "utterance_truncated",
                "max_s": self._profile.vad.max_utterance_s,
                "message": f"you spoke for more than {self._profile.vad.max_utterance_s:g} s; "
                "I'll answer what I heard so far",
            })
        await self._interrupt()
        if early is not None and not early.cancelled:  # the reply to this pause is under way
            turn = early
            turn.marks.rebase(ended_at)
            self._count_speculation("confirmed")
            self._adopt(turn)
        else:
            turn = self._start_reply(Marks("speech_end", started=ended_at), audio=audio)
        turn.marks.mark("end_confirmed")  # when the VAD was sure

    def _speculate(self, audio, ended_at: float) -> Turn:
        """The user paused: start replying to what they said, held back until the VAD ends
        the utterance at this pause (speculation.py). The listener aborts it otherwise."""
        marks = Marks("speech_end", started=ended_at)
        turn = self._new_turn(self._reply_source(audio=audio), marks, Gate(self._emit))
        turn.start()
        self._count_speculation("started")
        return turn

    def _count_speculation(self, outcome: str) -> None:
        self._speculations[outcome] += 1
        speculative_replies().inc(tags={"outcome": outcome})

    def _start_reply(self, marks: Marks, **user_input) -> Turn:
        return self._begin_turn(self._reply_source(**user_input), marks)

    def _reply_source(self, **user_input):
        return lambda turn_id, marks, gate: reply(
            **user_input,
            turn_id=turn_id,
            asr=self._stages.asr,
            llm=self._stages.llm,
            conversation=self._conversation,
            marks=marks,
            emit=gate.emit,
            max_tokens=self._profile.llm.max_tokens,
            timeouts=self._timeouts,
            when_committed=gate.when_open,
        )

    async def _finish_silent_turn(self, turn: Turn) -> None:
        """A turn ends here when its task does if no last frame will end it: one that had
        nothing to say, or one whose stage failed (its queued frames are dropped: the rest
        of the reply will never come)."""
        await turn.wait()
        if turn.cancelled or self._turn is not turn:
            return
        if turn.failed:
            self._clock.flush()
            self._end_turn(turn, interrupted=True)
        elif turn.frames_queued == 0:
            self._end_turn(turn, interrupted=False)

    async def _interrupt(self) -> bool:
        turn = self._turn
        if turn is None:
            return False
        await turn.cancel()
        self._clock.flush()
        self._end_turn(turn, interrupted=True)
        return True

    def _end_turn(self, turn: Turn, interrupted: bool) -> None:
        if self._turn is not turn:
            return
        self._turn = None
        self._emit({"type": "turn_end", "turn_id": turn.id, "interrupted": interrupted})
        self._emit({"type": "state", "state": "idle"})

    def _on_video_sent(self, index: int, unit: AVUnit) -> None:
        turn = self._turn
        if turn is None or unit.turn_id != turn.id:
            return
        if "first_frame_sent" not in turn.marks:
            turn.marks.mark("first_frame_sent")
            self._emit({"type": "state", "state": "speaking", "turn_id": turn.id})
            self._emit({"type": "latency", "turn_id": turn.id, "marks": dict(turn.marks.values)})
            record_marks(turn.marks.values)
        if unit.last:
            self._end_turn(turn, interrupted=False)

    # --- WebRTC ---------------------------------------------------------------------------
    def _ice_configuration(self) -> RTCConfiguration:
        servers = ice_servers(self._settings.ice_servers, self.id)
        return RTCConfiguration(iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in servers
        ])

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


    async def _on_connection_state(self, state: str) -> None:
        log.info("session %s connection %s", self.id, state)
        if state == "connected" and not self._greeted:
            self._greeted = True
            self._emit({"type": "ready", "session_id": self.id})
            greeting = self._character.greeting if self._character else ""
            if greeting and self._turn is None:
                await self._start_turn(greeting, interrupt=False)
        elif state in ("failed", "closed"):
            await self.close(f"peer connection {state}")

    def _on_datachannel(self, channel) -> None:
        self._channel = channel

        @channel.on("message")
        async def _control(message) -> None:
            await self._on_control(message)

        @channel.on("open")
        def _flush() -> None:
            self._send_pending()

        if channel.readyState == "open":
            self._send_pending()

    async def _on_control(self, message) -> None:
        """Client -> server messages on the data channel: mic mode and push-to-talk. Too big,
        too many or malformed: counted and dropped (an error event tells the client why)."""
        if len(message) > self._settings.max_control_message_bytes or self._control_rate.take():
            self._control_dropped += 1
            return
        try:
            command = json.loads(message)
            kind = command["type"]
            if kind == "mic_mode":
                self._listener.set_mode(command["mode"])
                self._emit({"type": "mic_mode", "mode": self._listener.mode})
                if self._turn is None:
                    self._emit({"type": "state", "state": "idle"})  # drop a held push-to-talk
            elif kind == "ptt":
                down = bool(command["down"])
                if not await self._listener.push_to_talk(down) and not down and self._turn is None:
                    self._emit({"type": "state", "state": "idle"})  # released with nothing said
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except (ValueError, KeyError, TypeError) as exc:
            self._control_dropped += 1
            self._emit({"type": "error", "stage": "control", "message": f"bad control message: {exc}"[:200]})

    def _emit(self, event: dict) -> None:
        event.setdefault("t", round(time.time() * 1000))
        self._pending_events.append(json.dumps(event))
        del self._pending_events[:-MAX_PENDING_EVENTS]
        self._send_pending()

    def _send_pending(self) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        for message in self._pending_events:
            with contextlib.suppress(Exception):
                channel.send(message)
        self._pending_events.clear()
