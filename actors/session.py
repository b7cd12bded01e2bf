"""SessionActor: one per session, a thin Ray shell around the session core.

It holds what is the session's: the token's hash, the A/V clock, the conversation and the
turn controller (actors/turn_controller.py, the core: no Ray, no aiortc), the mic listener,
and the transports that reach the client (actors/transports/). Requests are authorised and
rate-limited here, then handed to the core; events from the core go to every transport.

The actor is started ahead of time in a warm pool (named `session:<id>`, detached: it does not
die with the session manager's replica), then activated with the session's token hash, avatar
and character, or with a stored record to resume a session whose actor died. It writes its
record through to the session store (actors/store.py) whenever the conversation, avatar or
voice changes. It ends itself when the peer disconnects, when no peer connects in time, or
after an idle TTL; the session manager awaits `wait_closed()` and then kills the process, so
nothing outlives a session.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import Mapping

import numpy as np

from actors.capacity import LoadWindow, SessionLoad
from actors.clock import MediaClock
from actors.conversation import Conversation, prefill
from actors.errors import (
    BadRequest, InvalidChoice, RateLimited, SessionConflict, SessionError, SessionForbidden, SessionNotFound,
)
from actors.listener import MicListener
from actors.metrics import FrameCounters, record_marks, speculative_replies
from actors.realtime import RealtimeConversation
from actors.rate_limit import TokenBucket
from actors.store import RecordWriter, SessionRecord, open_store
from actors.transports.base import Transport
from actors.transports.webrtc import WebRTCTransport
from actors.transports.mjpeg import MjpegViewer
from actors.transports.websocket import WebSocketTransport
from actors.turn import audio_chunks
from actors.turn_controller import StageHandles, TurnController, TurnSettings
from serve_app.config import Character, Profile
from serve_app.engines.lipsync import create_lipsync_engine
from serve_app.engines.vad import create_vad_engine
from serve_app.engines.audio import to_float32
from serve_app.engines.media import FPS, OUTPUT_RATE, SPEECH_RATE
from serve_app.engines.realtime.tools import ToolBox
from serve_app.engines.vad.detector import UtteranceDetector
from serve_app.events import (
    Ack, Ask, BadMessage, Command, Error, Event, Interrupt, MicModeChanged, Ping, Pong, PushToTalk, Ready, Say,
    ServerPing, ServerPong, SessionChanged, SessionExpiring, SetMicMode, State, Welcome, parse_message,
    parse_socket_message,
)
from serve_app.ice import ice_servers

log = logging.getLogger(__name__)

MAX_UNSENT_EVENTS = 200  # events kept for a client that has not connected yet
CLOSE_NO_HEARTBEAT, CLOSE_REPLACED = 4408, 4409  # WebSocket close codes (README)
MIC_BURST_S = 2.0  # WebSocket mic audio may run this far ahead of real time, no further
VIEWER_IDLE_S = 5.0  # an MJPEG viewer not pulled for this long is closed
MAX_SOCKET_ENDINGS = 8  # closed connections whose close code a late pull can still learn


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def actor_name(session_id: str) -> str:
    return f"session:{session_id}"


def _node_id() -> str | None:
    """The Ray node this actor runs on (where its media flows from)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not in a Ray worker (unit tests)
        return None


class _RayMetrics:
    """The core's metrics, exported through Ray's metrics agent."""

    def speculation(self, outcome: str) -> None:
        speculative_replies().inc(tags={"outcome": outcome})

    def marks(self, values: Mapping[str, float]) -> None:
        record_marks(values)


class SessionActor:
    def __init__(self, session_id: str, profile: Profile, stages: StageHandles, owner: str = "") -> None:
        """`owner`: the Serve app whose session manager started it (SessionPool.adopt)."""
        self.id = session_id
        self._owner = owner
        self._node_id = _node_id()
        self._profile = profile
        self._settings = profile.sessions
        self._stages = stages
        # The session renders its own idle frames (sprite compositing, or the avatar's video
        # frames) so idling costs no remote calls and no model; talking frames come from the
        # LipSync deployment, whatever its backend. Neural engines idle on the same frames.
        self._idle_engine = create_lipsync_engine("viseme", avatars_dir=profile.avatars_dir)
        self._audio_context = (0, 0)  # the lip-sync engine's (context, look-ahead) frames
        self._token_hash: str | None = None
        self._client: str | None = None
        self._created = 0.0  # Unix time, kept across a resume
        self._resumed = False
        store = profile.store
        self._record = RecordWriter(open_store(store), ttl_s=self._settings.max_lifetime_s + store.resume_ttl_s)
        self._character: Character | None = None
        self._core: TurnController | None = None
        self._conversation: Conversation | None = None
        self._listener: MicListener | None = None  # the pipeline's ears (VAD)
        self._realtime: RealtimeConversation | None = None  # or a realtime server's
        self._clock: MediaClock | None = None
        self._webrtc: WebRTCTransport | None = None
        self._answering = False  # an offer is being answered: a second one is refused
        self._transports: list[Transport] = []
        self._unsent: list[Event] = []  # events from before any transport was attached
        self._greeted = False
        self._warned_expiry = False
        self._activated = 0.0
        self._last_activity = 0.0
        self._closed: asyncio.Future | None = None
        self._watchdog: asyncio.Task | None = None
        self._close_reason = ""
        self._frame_counters = FrameCounters()
        self._load = LoadWindow(self._settings.admission.window_s)
        self._turn_requests = TokenBucket(self._settings.turn_requests_per_min / 60, self._settings.turn_requests_burst)
        self._control_rate = TokenBucket(self._settings.control_messages_per_s,
                                         max(1, int(self._settings.control_messages_per_s)))
        self._control_dropped = 0  # client messages over the size or rate limit, or malformed
        self._sockets: dict[str, WebSocketTransport] = {}  # by connection id: at most one live
        self._socket_endings: dict[str, tuple[int, str]] = {}  # recently closed: (code, reason)
        self._socket_lost_at: float | None = None  # when the last WebSocket client went away
        self._socket_pinged = 0.0
        self._socket_opened = 0  # connections so far (a later one is a resume)
        self._mic_budget = TokenBucket(SPEECH_RATE, int(SPEECH_RATE * MIC_BURST_S))
        self._mic_dropped = 0  # WebSocket mic samples beyond real time
        self._stream = False  # a MuseTalk-style streaming session: viewing and stopping need no token
        self._viewers: dict[str, MjpegViewer] = {}
        self._viewer_pulled: dict[str, float] = {}

    # --- lifecycle --------------------------------------------------------------------
    async def ready(self) -> bool:
        self._closed = asyncio.get_running_loop().create_future()
        self._audio_context = tuple(await self._stages.lipsync.audio_context.remote())
        return True

    async def activate(self, token_sha256: str, avatar_id: str, character: Character, stream: bool = False,
                       client: str | None = None, resume: SessionRecord | None = None) -> dict:
        """`stream`: a MuseTalk-style streaming session (see SessionPool.create). `resume`: the
        stored record of this session, whose actor died: its history, voice and age go on
        here, and the client that reconnects is not greeted again."""
        if self._token_hash is not None:
            raise SessionConflict("session already active")
        self._check_avatar(avatar_id)
        self._character = character
        self._stream = stream
        self._client = client
        conversation = self._conversation = Conversation(
            character, self._profile.llm.history_turns, self.id,
            history=resume.history if resume else None, on_change=self._save_record)
        realtime = self._profile.conversation.backend == "realtime"
        if not realtime:
            prefill(self._stages.llm, conversation, self._profile.llm.max_tokens)
        self._token_hash = token_sha256
        self._activated = self._last_activity = time.monotonic()
        self._created = resume.created if resume else time.time()
        self._activated -= max(0.0, time.time() - self._created)  # a resumed session's lifetime goes on
        self._resumed = resume is not None
        self._clock = MediaClock(
            idle_frame=lambda n: self._idle_engine.idle_frame(self._core.avatar_id, n),
            max_frames_ahead=self._settings.max_frames_ahead,
        )
        self._core = TurnController(
            self._stages, self._clock, self._emit, conversation, self._turn_settings(),
            avatar_id=avatar_id, voice=(resume.voice if resume and not realtime else None) or character.voice,
            style=character.voice_style, metrics=_RayMetrics(),
        )
        if realtime:
            self._realtime = self._make_realtime(self._core, character)
            self._realtime.start()
        else:
            self._listener = self._make_listener(self._core)
        self._save_record()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        return {"session_id": self.id, "avatar": avatar_id, "character": character.id}

    def _save_record(self) -> None:
        """Write what a new actor would need to go on with this session (actors/store.py)."""
        if self._token_hash is None or self._close_reason:
            return  # a session that ended deletes its record; nothing may write it again
        self._record.save(SessionRecord(
            session_id=self.id, token_hash=self._token_hash, character=self._character.id,
            avatar=self._core.avatar_id, voice=self._voice, history=self._conversation.history,
            created=self._created, client=self._client, stream=self._stream))

    def describe(self) -> dict:
        """For a restarted session manager rebuilding its view (no secret: a token's hash)."""
        active = self._token_hash is not None and not self._close_reason
        return {"owner": self._owner, "active": active, "token_hash": self._token_hash, "client": self._client,
                "age_s": time.monotonic() - self._activated if active else 0.0, "node_id": self._node_id}

    def _turn_settings(self) -> TurnSettings:
        profile = self._profile
        return TurnSettings(
            chunk_frames=profile.lipsync.chunk_frames,
            timeouts={stage: getattr(profile, stage).timeout_s for stage in ("asr", "llm", "tts", "lipsync")},
            max_tokens=profile.llm.max_tokens,
            max_utterance_s=profile.vad.max_utterance_s,
            audio_context=self._audio_context,
            tts_fallback=profile.tts.fallback is not None,
        )

    def _make_listener(self, hooks: TurnController) -> MicListener:
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
        return MicListener(detector, hooks, vad.max_utterance_s,
                           speculate_after_s=vad.speculate_after_ms / 1000 if vad.speculate_after_ms else None)

    def _make_realtime(self, core: TurnController, character: Character) -> RealtimeConversation:
        settings = self._profile.conversation.realtime
        return RealtimeConversation(
            core, self._emit, self._conversation, settings, voice=character.realtime_voice or settings.voice,
            tools=ToolBox(settings.tools, character),
            api_key=os.environ.get(settings.api_key_env, "") if settings.api_key_env else None,
        )

    def _check_avatar(self, avatar_id: str) -> None:
        try:
            self._idle_engine.idle_frame(avatar_id, 0)  # loads and checks it
        except (KeyError, ValueError) as exc:
            raise InvalidChoice(str(exc.args[0] if exc.args else exc)) from None

    async def wait_closed(self) -> str:
        """Resolves with the reason once the session has ended (the manager awaits this)."""
        return await asyncio.shield(self._closed)

    async def close(self, reason: str = "closed") -> None:
        if self._closed is None or self._closed.done() or self._close_reason:
            return  # idempotent: a second close (DELETE racing a hang-up) does nothing
        self._close_reason = reason
        log.info("session %s closing: %s", self.id, reason)
        if self._realtime is not None:
            await self._realtime.close()
        if self._core is not None:
            await self._core.close()
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        for transport in self._transports:
            await transport.close()
        for viewer in self._viewers.values():
            await viewer.close()
        await self._record.flush()  # before the manager deletes the record, never after
        self._closed.set_result(reason)

    async def _watch(self) -> None:
        """Ends sessions whose peer never connects or that stay idle past the TTL."""
        while True:
            slept = time.monotonic()
            await asyncio.sleep(1.0)
            now = time.monotonic()
            stats = self._clock.stats
            self._load.sample(stats, loop_lag_ms=max(0.0, (now - slept - 1.0) * 1000), now=now)
            self._frame_counters.update(
                {"sent": stats.video_frames, "speech": stats.speech_frames, "late": stats.late_frames,
                 "skipped": stats.skipped_frames, "repeated": stats.repeated_frames,
                 "audio_late": stats.audio_late, "audio_skipped": stats.audio_skipped,
                 "underrun": stats.underrun_frames}
            )
            if self._webrtc is not None and self._webrtc.state == "connected":
                self._last_activity = now  # flowing media keeps a session alive
            await self._watch_sockets(now)
            await self._watch_viewers(now)
            if self._socket_lost_at is not None and now - self._socket_lost_at > self._settings.resume_ttl_s:
                await self.close("the WebSocket client did not come back within resume_ttl_s")
                return
            age = now - self._activated
            if age >= self._settings.max_lifetime_s:
                await self.close("the session reached its maximum lifetime")
                return
            if not self._warned_expiry and age >= self._settings.max_lifetime_s - self._settings.lifetime_warning_s:
                self._warned_expiry = True
                self._emit(SessionExpiring(
                    seconds_left=round(self._settings.max_lifetime_s - age),
                    message="this session ends soon (its maximum lifetime); start a new one to go on"))
            if not self._greeted and now - self._activated > self._settings.connect_timeout_s:
                await self.close("no WebRTC connection within the connect timeout")
                return
            if now - self._last_activity > self._settings.idle_ttl_s:
                await self.close("idle past the session TTL")
                return

    # --- requests (all need the token) ---------------------------------------------------
    def _check_alive(self) -> None:
        if self._token_hash is None or self._closed is None or self._closed.done():
            raise SessionNotFound(f"session {self.id} not found")

    def _authorize(self, token: str | None) -> None:
        self._check_alive()
        if not token or not hmac.compare_digest(token_hash(token), self._token_hash):
            raise SessionForbidden()
        self._last_activity = time.monotonic()

    def _lifetime_left(self) -> float:
        return self._settings.max_lifetime_s - (time.monotonic() - self._activated)

    def _rate_limit(self) -> None:
        """say, ask and PATCH: each may start work on the model replicas."""
        wait = self._turn_requests.take()
        if wait:
            raise RateLimited(
                f"too many requests for this session (limit {self._settings.turn_requests_per_min:g} a minute); "
                "slow down", max(1, round(wait)))

    async def offer(self, token: str | None, sdp: str, sdp_type: str = "offer") -> dict:
        self._authorize(token)
        if self._webrtc is not None or self._answering:
            raise SessionConflict("this session already has a peer connection; create a new session")
        self._answering = True  # before the first await: offers sent together get one peer
        try:
            transport = WebRTCTransport(self, self._clock, ice_servers(self._settings.ice_servers, self.id, self._lifetime_left()),
                                        self._settings.max_offer_candidates, self._settings.candidate_networks)
            answer = await transport.answer(sdp, sdp_type)  # a bad offer leaves nothing behind
        finally:
            self._answering = False
        if self._close_reason:  # the session ended while the answer was made
            await transport.close()
            raise SessionNotFound(f"session {self.id} not found")
        self._webrtc = transport
        self._attach(transport)
        return answer

    async def say(self, token: str | None, text: str) -> dict:
        self._authorize(token)
        return {"turn_id": await self._say(text)}

    async def ask(self, token: str | None, text: str) -> dict:
        """A typed message to the character: answered by the LLM, like a spoken one."""
        self._authorize(token)
        return {"turn_id": await self._ask(text)}

    def _checked_text(self, text: str) -> str:
        limit = self._settings.max_text_chars
        if not text.strip():
            raise BadRequest("text is empty")
        if len(text) > limit:
            raise BadRequest(f"text is {len(text)} characters; the limit is {limit}")
        return text

    async def _say(self, text: str) -> str:
        self._rate_limit()
        speaker = self._realtime or self._core
        return await speaker.say(self._checked_text(text))

    async def _ask(self, text: str) -> str:
        self._rate_limit()
        speaker = self._realtime or self._core
        return await speaker.ask(self._checked_text(text))

    async def _interrupt(self) -> bool:
        return await (self._realtime or self._core).interrupt()

    async def interrupt(self, token: str | None) -> dict:
        self._authorize(token)
        return {"interrupted": await self._interrupt()}

    async def update(self, token: str | None, avatar: str | None, voice: str | None) -> dict:
        """Switch avatar and/or voice. A reply in progress is cut: its frames show the old face."""
        self._authorize(token)
        self._rate_limit()
        core = self._core
        if voice is not None and self._realtime is not None:
            if voice != self._realtime.voice:
                raise BadRequest(f"with the realtime conversation backend the voice is the server's "
                                 f"{self._realtime.voice!r}, fixed per session (conversation.realtime.voice, or "
                                 "the character's realtime_voice)")
            voice = None  # already so
        if voice is not None:
            voices = await self._stages.tts.voice_ids.remote()
            if voice not in voices:
                raise InvalidChoice(f"unknown voice {voice!r}; available: {voices}")
        if avatar is not None:
            self._check_avatar(avatar)
        await self._interrupt()
        # A reply started in a pause would answer with the old face or voice; if the pause
        # then ends the utterance, it gets a fresh reply.
        core.discard_speculation()
        core.avatar_id = avatar or core.avatar_id
        core.voice = voice or core.voice
        self._save_record()
        self._emit(SessionChanged(avatar=core.avatar_id, voice=self._voice))
        return {"avatar": core.avatar_id, "voice": self._voice}

    @property
    def _voice(self) -> str | None:
        """The voice the session speaks with: the realtime server's, or its TTS voice."""
        if self._realtime is not None:
            return self._realtime.voice
        return self._core.voice if self._core else None

    async def info(self, token: str | None) -> dict:
        self._authorize(token)
        return self._info()

    async def stats(self) -> dict:
        """Unauthenticated, for the manager and metrics: no secrets in here."""
        return self._info()

    async def load(self) -> SessionLoad:
        """The last window's deadline misses and memory (the pool's admission polls this)."""
        return self._load.summary()

    def _info(self) -> dict:
        clock = self._clock.stats if self._clock else None
        core = self._core
        return {
            "session_id": self.id,
            "avatar": core.avatar_id if core else self._profile.default_avatar,
            "voice": self._voice,
            "character": self._character.id if self._character else None,
            "connection": self._webrtc.state if self._webrtc else "new",
            "speaking": core is not None and core.speaking,
            "video_frames": clock.video_frames if clock else 0,
            "speech_frames": clock.speech_frames if clock else 0,
            "late_frames": clock.late_frames if clock else 0,
            "skipped_frames": clock.skipped_frames if clock else 0,
            "repeated_frames": clock.repeated_frames if clock else 0,
            "audio_late": clock.audio_late if clock else 0,
            "audio_skipped": clock.audio_skipped if clock else 0,
            "underrun_frames": clock.underrun_frames if clock else 0,
            "speculative_replies": dict(core.speculations) if core else {"started": 0, "confirmed": 0},
            "exchanges": len(self._conversation) if self._conversation else 0,
            "control_messages_dropped": self._control_dropped,
            "websocket": next((t.info() for t in self._sockets.values()), None),
            "mic_samples_dropped": self._mic_dropped,
        }

    # --- what transports call (SessionPort) ------------------------------------------------
    async def connected(self) -> None:
        log.info("session %s connected", self.id)
        self._emit(Ready(session_id=self.id, resumed=self._resumed))
        if self._greeted:
            return  # a reconnect: no second greeting
        self._greeted = True
        if self._resumed:
            return  # the client was greeted by the session's first actor
        greeting = self._character.greeting if self._character and not self._stream else ""
        if greeting and self._realtime is not None:
            await self._realtime.greet(greeting)
        elif greeting and not self._core.speaking:
            await self._core.say(greeting, interrupt=False)

    async def disconnected(self, reason: str) -> None:
        await self.close(reason)

    async def hear(self, audio: np.ndarray) -> None:
        if self._realtime is not None:
            await self._realtime.hear(audio)
        else:
            await self._listener.push(audio)

    async def control(self, raw: str | bytes) -> None:
        """Client -> server messages: mic mode and push-to-talk. Too big, too many or
        malformed: counted and dropped (an error event tells the client why)."""
        if len(raw) > self._settings.max_control_message_bytes or self._control_rate.take():
            self._control_dropped += 1
            return
        try:
            command = parse_message(raw)
        except BadMessage as exc:
            self._refuse(f"bad control message: {exc}")
            return
        if isinstance(command, Ping):  # only the data channel's sender wants the answer
            if self._webrtc is not None:
                self._webrtc.send_event(ServerPong())
            return
        await self._command(command)

    def _refuse(self, message: str) -> None:
        self._control_dropped += 1
        self._emit(Error(stage="control", message=message[:200]))

    async def _command(self, command: Command) -> None:
        """A mic-mode or push-to-talk message, from the data channel or a WebSocket."""
        core, listener = self._core, self._listener
        if listener is None:  # the realtime server detects turns itself
            self._refuse("mic modes and push-to-talk are not available with the realtime conversation backend; "
                         "its server detects when you speak")
            return
        if isinstance(command, SetMicMode):
            listener.set_mode(command.mode)
            core.discard_speculation()
            self._emit(MicModeChanged(mode=listener.mode))
            if not core.speaking:
                self._emit(State(state="idle"))  # drop a held push-to-talk
        elif isinstance(command, PushToTalk):
            if not await listener.push_to_talk(command.down) and not command.down and not core.speaking:
                self._emit(State(state="idle"))  # released with nothing said

    def _emit(self, event: Event) -> None:
        if not self._transports:  # kept for the first client to connect
            self._unsent.append(event)
            del self._unsent[:-MAX_UNSENT_EVENTS]
        for transport in self._transports:
            transport.send_event(event)

    def _attach(self, transport: Transport) -> None:
        self._transports.append(transport)
        unsent, self._unsent = self._unsent, []
        for event in unsent:
            transport.send_event(event)

    # --- WebSocket clients (serve_app/ws_relay.py relays each socket) -----------------------
    async def ws_open(self, token: str | None, face: str) -> dict:
        """A WebSocket client said hello. A newer connection with the token replaces the
        older one (a reconnect): same session, history and avatar."""
        self._authorize(token)
        for connection in list(self._sockets):
            await self._drop_socket(connection, CLOSE_REPLACED, "replaced by a newer connection to this session")
        ws = self._settings.websocket
        transport = WebSocketTransport(self._clock, face,
                                       video_window=ws.video_window_frames, audio_window=ws.audio_window_frames,
                                       jpeg_quality=ws.jpeg_quality)
        connection = uuid.uuid4().hex
        self._sockets[connection] = transport
        self._socket_lost_at = None
        self._socket_opened += 1
        transport.start()
        welcome = Welcome(session_id=self.id, face=face, resumed=self._socket_opened > 1 or self._resumed, fps=FPS,
                          audio_rate=OUTPUT_RATE, first_frame=transport.first_frame, heartbeat_s=ws.heartbeat_s)
        self._attach(transport)
        await self.connected()
        return {"connection": connection, "welcome": welcome.to_json()}

    async def ws_pull(self, connection: str) -> dict:
        """What waits for the client: {"messages": [...]}, or {"close": code, "reason": ...}."""
        transport = self._sockets.get(connection)
        if transport is None:  # closed between two pulls: say why it was
            code, reason = self._socket_endings.get(connection, (CLOSE_REPLACED, "this connection has ended"))
            return {"close": code, "reason": reason}
        messages = await transport.pull()
        if messages is None:
            return {"close": transport.close_code, "reason": transport.close_reason}
        return {"messages": messages}

    async def ws_receive(self, connection: str, items: list) -> None:
        """Client messages in the order sent: JSON text, and binary mic audio (PCM16 mono
        16 kHz), consecutive pieces of which are heard as one."""
        transport = self._sockets.get(connection)
        if transport is None:
            return
        transport.heard()
        self._last_activity = time.monotonic()
        audio: list[bytes] = []
        for item in items:
            if isinstance(item, bytes):
                audio.append(item)
                continue
            if audio:
                await self._hear_pcm(b"".join(audio))
                audio = []
            await self._socket_message(transport, item)
        if audio:
            await self._hear_pcm(b"".join(audio))

    async def ws_gone(self, connection: str, reason: str) -> None:
        """The relay's socket closed: the session waits resume_ttl_s for the client."""
        if connection in self._sockets:
            await self._drop_socket(connection, 1000, reason)
            if not self._sockets and self._webrtc is None:
                self._socket_lost_at = time.monotonic()

    async def _drop_socket(self, connection: str, code: int, reason: str) -> None:
        transport = self._sockets.pop(connection)
        self._socket_endings[connection] = (code, reason)
        while len(self._socket_endings) > MAX_SOCKET_ENDINGS:
            del self._socket_endings[next(iter(self._socket_endings))]
        if transport in self._transports:
            self._transports.remove(transport)
        await transport.close(code, reason)

    async def _watch_sockets(self, now: float) -> None:
        heartbeat = self._settings.websocket.heartbeat_s
        for connection, transport in list(self._sockets.items()):
            self._last_activity = now  # a live socket keeps the session, as flowing media does
            if now - transport.last_heard > 2 * heartbeat:
                await self._drop_socket(connection, CLOSE_NO_HEARTBEAT, "no message or pong for two heartbeats")
                if not self._sockets and self._webrtc is None:
                    self._socket_lost_at = now
            elif now - self._socket_pinged >= heartbeat:
                transport.send_text(ServerPing().to_json())
        if now - self._socket_pinged >= heartbeat:
            self._socket_pinged = now

    async def _hear_pcm(self, data: bytes) -> None:
        samples = np.frombuffer(data[: len(data) - len(data) % 2], np.int16)
        if self._mic_budget.take(len(samples)):  # faster than real time: not heard
            self._mic_dropped += len(samples)
            return
        await self.hear(to_float32(samples))

    async def _socket_message(self, transport: WebSocketTransport, raw: str) -> None:
        if len(raw) > self._settings.websocket.max_message_bytes:
            self._refuse("message too long")
            return
        try:
            command = parse_socket_message(raw)
        except BadMessage as exc:
            self._refuse(f"bad message: {exc}")
            return
        if isinstance(command, Ack):
            transport.ack(command.frame)
        elif isinstance(command, Ping):
            transport.send_text(ServerPong().to_json())
        elif isinstance(command, Pong):
            pass  # heard() already noted it
        elif self._control_rate.take():
            self._control_dropped += 1
        else:
            try:
                if isinstance(command, Say):
                    await self._say(command.text)
                elif isinstance(command, Ask):
                    await self._ask(command.text)
                elif isinstance(command, Interrupt):
                    await self._interrupt()
                else:
                    await self._command(command)
            except SessionError as exc:
                self._refuse(str(exc))

    # --- audio files, MJPEG viewers, the streaming (seed) API ------------------------------
    async def play(self, token: str | None, pcm: np.ndarray, sample_rate: int) -> dict:
        """Lip-sync an audio file (int16 mono) instead of a voice; interrupts any reply."""
        self._authorize(token)
        self._rate_limit()
        await self._interrupt()  # a realtime reply is truncated to what was heard
        return {"turn_id": await self._core.play(audio_chunks(pcm, sample_rate))}

    def _authorize_view(self, token: str | None) -> None:
        if self._stream and token is None:  # the seed's stream URL: the session id is the key
            self._check_alive()
            return
        self._authorize(token)

    async def stop_stream(self) -> None:
        """POST /api/inference/stop/{id}: only for streaming sessions (others need DELETE)."""
        self._check_alive()
        if not self._stream:
            raise SessionForbidden("this session was not started by POST /api/inference/start; end it with "
                                   "DELETE /api/sessions/{id} and its token")
        await self.close("stopped")

    async def mjpeg_open(self, token: str | None, fps: int) -> str:
        self._authorize_view(token)
        settings = self._settings.mjpeg
        if len(self._viewers) >= settings.max_viewers:
            raise RateLimited(f"this session already has {settings.max_viewers} MJPEG viewers, the most allowed", 5)
        try:
            viewer = MjpegViewer(self._clock, fps, settings.queue_frames, settings.jpeg_quality)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        viewer_id = uuid.uuid4().hex
        self._viewers[viewer_id] = viewer
        self._viewer_pulled[viewer_id] = time.monotonic()
        viewer.start()
        await self.connected()
        return viewer_id

    async def mjpeg_pull(self, viewer_id: str) -> list[bytes] | None:
        viewer = self._viewers.get(viewer_id)
        if viewer is None:
            return None
        self._viewer_pulled[viewer_id] = time.monotonic()
        return await viewer.pull()

    async def mjpeg_close(self, viewer_id: str) -> None:
        viewer = self._viewers.pop(viewer_id, None)
        self._viewer_pulled.pop(viewer_id, None)
        if viewer is not None:
            await viewer.close()

    async def _watch_viewers(self, now: float) -> None:
        """A viewer whose stream stopped pulling (its client left unnoticed) is closed."""
        for viewer_id, pulled in list(self._viewer_pulled.items()):
            self._last_activity = now  # being watched keeps a session, as flowing media does
            if now - pulled > VIEWER_IDLE_S:
                await self.mjpeg_close(viewer_id)

