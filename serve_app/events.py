"""The session's vocabulary: every event the server sends a client, and every control
message a client may send, each a model with a `type` literal.

One module, so the session core, each transport (WebRTC data channel, WebSocket), the web
page and the README agree on what exists: `EVENT_TYPES` is what a client must handle
(tests/unit/test_events.py checks the page does). Events serialise to one JSON object
each; `t` is the server's wall clock in ms when the event happened (a speculative reply's
held events keep the time they were made, not the time they were let out).
"""
from __future__ import annotations

import time
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

TurnState = Literal["listening", "thinking", "speaking", "idle"]
MicMode = Literal["hands_free", "push_to_talk"]


def _now_ms() -> int:
    return round(time.time() * 1000)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)
    t: int = Field(default_factory=_now_ms)

    def to_json(self) -> str:
        return self.model_dump_json()


# --- server -> client -------------------------------------------------------------------
class Ready(Event):
    """The client's media is connected; the greeting (if any) follows."""

    type: Literal["ready"] = "ready"
    session_id: str
    resumed: bool = False  # restored from the store on a new actor (its old one died): no greeting


class State(Event):
    type: Literal["state"] = "state"
    state: TurnState
    turn_id: str | None = None


class UserTranscript(Event):
    type: Literal["user_transcript"] = "user_transcript"
    turn_id: str
    text: str


class AssistantText(Event):
    """The reply's text: whole for `say`, token deltas (`delta`) for an LLM reply."""

    type: Literal["assistant_text"] = "assistant_text"
    turn_id: str
    text: str
    delta: bool = False


class Latency(Event):
    """The turn's latency marks in ms since its origin (`request` or `speech_end`)."""

    type: Literal["latency"] = "latency"
    turn_id: str
    marks: dict[str, float]


class TurnEnd(Event):
    type: Literal["turn_end"] = "turn_end"
    turn_id: str
    interrupted: bool


class BargeIn(Event):
    """The user started talking over the avatar: its reply was cut."""

    type: Literal["barge_in"] = "barge_in"


class UtteranceTruncated(Event):
    type: Literal["utterance_truncated"] = "utterance_truncated"
    max_s: float
    message: str


class MicModeChanged(Event):
    type: Literal["mic_mode"] = "mic_mode"
    mode: MicMode


class SessionChanged(Event):
    """The session's avatar or voice changed (PATCH /api/sessions/{id})."""

    type: Literal["session"] = "session"
    avatar: str
    voice: str | None


class SessionExpiring(Event):
    type: Literal["session_expiring"] = "session_expiring"
    seconds_left: int
    message: str


class Error(Event):
    """A stage failed in a turn (`stage`: asr, llm, tts, lipsync, realtime, turn), or a client message
    was refused (`stage`: control). The message is fit for a person; no server insides."""

    type: Literal["error"] = "error"
    stage: str
    message: str
    turn_id: str | None = None


ServerEvent = Annotated[
    Union[Ready, State, UserTranscript, AssistantText, Latency, TurnEnd, BargeIn,
          UtteranceTruncated, MicModeChanged, SessionChanged, SessionExpiring, Error],
    Field(discriminator="type"),
]
EVENT_TYPES: frozenset[str] = frozenset(
    get_args(model.model_fields["type"].annotation)[0] for model in get_args(get_args(ServerEvent)[0])
)


# --- client -> server (data channel, WebSocket) -----------------------------------------
class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SetMicMode(Command):
    type: Literal["mic_mode"]
    mode: MicMode


class PushToTalk(Command):
    type: Literal["ptt"]
    down: bool


class Ping(Command):
    """A liveness check (data channel or WebSocket): the server answers with a `pong`."""

    type: Literal["ping"]


class Pong(Command):
    type: Literal["pong"]


# The data channel's liveness: a client pings this often and takes the session as gone (its
# actor died, its node was lost) when no pong came for CHANNEL_LOST_S. Without it a peer
# only notices by ICE consent failure, about 30 s.
CHANNEL_PING_S = 2.0
CHANNEL_LOST_S = 10.0

ControlMessage = Annotated[Union[SetMicMode, PushToTalk, Ping], Field(discriminator="type")]
_control = TypeAdapter(ControlMessage)


class BadMessage(ValueError):
    """A client message that is not JSON or not one of the documented types."""


def parse_message(raw: str | bytes, adapter: TypeAdapter = _control) -> Any:
    """One client message, validated; BadMessage says what is wrong in one line."""
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise BadMessage(f"{where}: {first['msg']}") from None


# --- WebSocket sessions: the protocol around the events ---------------------------------
Face = Literal["jpeg", "visemes", "none"]


class Hello(Command):
    """The first client message on /ws/sessions/{id}: the token travels here, never in the URL."""

    type: Literal["hello"]
    token: str = Field(..., min_length=1, max_length=256)
    face: Face = "jpeg"


class Say(Command):
    type: Literal["say"]
    text: str = Field(..., min_length=1, max_length=20_000)


class Ask(Command):
    type: Literal["ask"]
    text: str = Field(..., min_length=1, max_length=20_000)


class Interrupt(Command):
    type: Literal["interrupt"]


class Ack(Command):
    """The newest frame index the client has taken in: the server's flow control."""

    type: Literal["ack"]
    frame: int = Field(..., ge=0)


SocketMessage = Annotated[
    Union[SetMicMode, PushToTalk, Say, Ask, Interrupt, Ack, Ping, Pong], Field(discriminator="type")]
_socket = TypeAdapter(SocketMessage)
_hello = TypeAdapter(Hello)


def parse_hello(raw: str | bytes) -> Hello:
    return parse_message(raw, _hello)


def parse_socket_message(raw: str | bytes) -> Any:
    return parse_message(raw, _socket)


class Welcome(Event):
    """The server's answer to `hello`: how media will come."""

    type: Literal["welcome"] = "welcome"
    session_id: str
    face: Face
    resumed: bool  # a reconnect: the same session, history and avatar (on a new actor if the old one died)
    fps: int
    audio_rate: int
    first_frame: int  # the index of the first frame this connection gets
    heartbeat_s: float


class Mouth(Event):
    """A mouth keyframe for clients that render the face themselves (`face: "visemes"`):
    frame `frame` plays at `t_ms` on the session clock, as does its audio."""

    type: Literal["mouth"] = "mouth"
    frame: int
    t_ms: int
    viseme: str  # A-H or X (rest): see serve_app/engines/lipsync/base.py VISEMES
    weight: float  # how open, 0..1, from the frame's audio
    turn_id: str | None = None


class ServerPing(Event):
    type: Literal["ping"] = "ping"


class ServerPong(Event):
    type: Literal["pong"] = "pong"


PROTOCOL_TYPES: frozenset[str] = frozenset({"welcome", "mouth", "ping", "pong"})  # not events
