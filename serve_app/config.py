"""Declarative configuration: a backend profile (YAML) and character files, validated by pydantic.

Relative paths in a profile are resolved against the project root, because Serve builds the
application in worker processes whose working directory is not the operator's.
Secrets never live here: a backend that needs one names the environment variable to read.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serve_app.engines.tts.base import VoiceStyle

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    """Where the server keeps its files by default (the session store, renders): $DH_STATE_DIR,
    else the user's XDG state folder. Not a fixed path under /tmp, where another local user
    could make it first or read it."""
    if explicit := os.environ.get("DH_STATE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(xdg) / "digital-human"


def private_dir(path: Path) -> Path:
    """`path`, made if need be, readable by this user alone (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path
SESSION_NAMESPACE = "digital_human"


class ConfigError(ValueError):
    """A configuration file is missing or invalid; the message says which and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeploymentOptions(_Strict):
    """Passed to `Deployment.options()`: replicas, autoscaling and `ray_actor_options`."""

    num_replicas: int | str | None = None
    max_ongoing_requests: int | None = None
    autoscaling_config: dict[str, Any] | None = None
    ray_actor_options: dict[str, Any] = Field(default_factory=dict)
    # Handed to the deployment's reconfigure(); changeable on a running app (LipSync batching).
    user_config: dict[str, Any] | None = None

    def as_options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class IngressOptions(DeploymentOptions):
    # Request slots per ingress replica. Long-lived requests hold one each for as long as they
    # last, within limits.streams' bounds (46 by default): the rest stay free for short ones.
    # Serve's default of 5 let six slow uploads stop the API.
    max_ongoing_requests: int | None = 100


class IceServer(_Strict):
    urls: list[str]
    username: str | None = None
    # Name of the environment variable that holds the TURN credential (never the secret itself).
    credential_env: str | None = None
    # Better: name of the variable holding the TURN server's shared secret (coturn
    # `static-auth-secret`); each session then gets its own credential, valid credential_ttl_s
    # (serve_app/ice.py). Replaces username/credential_env.
    auth_secret_env: str | None = None
    credential_ttl_s: float = Field(3600, gt=0)

    @model_validator(mode="after")
    def _one_kind_of_credential(self) -> "IceServer":
        if self.auth_secret_env and (self.username or self.credential_env):
            raise ValueError("give auth_secret_env (time-limited credentials) or username + "
                             "credential_env (a static one), not both")
        return self


class WebSocketSettings(_Strict):
    """WebSocket sessions (GET /ws/sessions/{id}); see README "WebSocket sessions"."""

    hello_timeout_s: float = Field(5.0, gt=0)  # the token must come this soon after connecting
    max_message_bytes: int = Field(64 * 1024, ge=1024)  # one client message (a mic frame is 640)
    heartbeat_s: float = Field(10.0, gt=0)  # server pings this often; silent for 2x: gone
    # Flow control by the client's acks: frames this far past the newest acked one lose
    # their picture (video_window) and then their audio too (audio_window).
    video_window_frames: int = Field(25, ge=1)
    audio_window_frames: int = Field(100, ge=1)
    jpeg_quality: int = Field(80, ge=10, le=100)


class MjpegSettings(_Strict):
    """MJPEG viewers (GET /api/stream/{id}, GET /api/sessions/{id}/mjpeg)."""

    max_viewers: int = Field(4, ge=1)  # per session
    queue_frames: int = Field(30, ge=1)  # encoded frames a viewer keeps; a slow one loses the oldest
    jpeg_quality: int = Field(80, ge=10, le=100)


class AdmissionSettings(_Strict):
    """Admission by measured capacity (actors/capacity.py). While any admitted session
    missed more than `max_missed_frames` frames (late, skipped, repeated) in the last
    `window_s`, or its process woke up more than `max_loop_lag_ms` late, or the node had less
    than `min_free_cores` idle (a talking session's cost; steal counts as busy), a new
    session gets 503 with Retry-After. The first session is always let in. The CPU rule is
    for one machine: with `sessions.slot_resource` (a cluster) the slots size the session
    nodes and only the sessions' own deadlines are measured."""

    enabled: bool = True
    window_s: float = Field(10.0, gt=0)
    poll_s: float = Field(1.0, gt=0)  # how often the pool asks its sessions
    max_missed_frames: int = Field(5, ge=0)
    max_loop_lag_ms: float = Field(150.0, gt=0)
    min_free_cores: float = Field(0.5, ge=0)


class SessionSettings(_Strict):
    # The most sessions at once, whatever the measured capacity (`admission`) allows.
    max_sessions: int = Field(4, ge=1)
    warm_pool: int = Field(1, ge=0)
    actor_num_cpus: float = Field(0.1, ge=0)
    # A custom resource each session actor reserves one unit of, besides its CPU. Give each
    # node that may run sessions as many as it holds at 25 fps (`ray start --resources=
    # '{"session_slots": 8}'`, BENCHMARKS.md): the autoscaler then sees session demand and
    # starts a node for it. null: sessions reserve CPU only (one machine).
    slot_resource: str | None = None
    # The cluster's session slots with every node group at its maximum (e.g. KubeRay's cpu
    # group: maxReplicas x slots per pod): capacity then reports what the autoscaler may add.
    max_slots: int | None = Field(None, ge=1)
    # How long a session request waits for its actor to be placed and started (on a cluster:
    # the autoscaler starting a node); then 503 with Retry-After, and nothing is left behind.
    start_timeout_s: float = Field(30.0, gt=0)
    # A session whose peer never connects, or that sees no request for this long, is removed.
    connect_timeout_s: float = Field(30.0, gt=0)
    idle_ttl_s: float = Field(900.0, gt=0)
    retry_after_s: int = Field(10, ge=1)
    # A session ends after this long whatever it does; the client hears of it
    # `lifetime_warning_s` before (a `session_expiring` event).
    max_lifetime_s: float = Field(4 * 3600, gt=0)
    lifetime_warning_s: float = Field(60, ge=0)
    # Who may create sessions. `create_token_env` names a variable holding a creation key
    # (`Authorization: Bearer <key>` on POST /api/sessions) for deployments whose page sits
    # behind their own login; unset, anyone may. Per client address: how many sessions at
    # once and how many creations a minute (429 beyond); null = no limit (local use, where
    # every tab is 127.0.0.1). Behind a reverse proxy every client has the proxy's address.
    create_token_env: str | None = None
    max_sessions_per_client: int | None = Field(None, ge=1)
    creations_per_min_per_client: float | None = Field(None, gt=0)
    # Reverse proxies (CIDRs) whose X-Forwarded-For names the client (serve_app/forwarded.py);
    # empty: the direct peer's address is the client's.
    trusted_proxies: list[str] = Field(default_factory=list)
    max_text_chars: int = Field(2000, ge=1)
    # Speech frames produced ahead of the clock (40 ms each): bounds latency and memory.
    max_frames_ahead: int = Field(12, ge=2)
    ice_servers: list[IceServer] = Field(default_factory=list)
    # An offer is work the client asks of the server (actors/offer_checks.py): its ICE
    # candidates are bounded, and only those in these networks are probed. The default suits
    # local use; a public deployment lists its clients' networks (or 0.0.0.0/0 and ::/0).
    max_offer_candidates: int = Field(32, ge=1)
    candidate_networks: list[str] = Field(default_factory=lambda: [
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
        "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10",
    ])
    # Requests that start or change a turn (say, ask, PATCH), per session: a token bucket.
    turn_requests_per_min: float = Field(60, gt=0)
    turn_requests_burst: int = Field(10, ge=1)
    # Data-channel messages (mic mode, push-to-talk), per session: bigger ones are dropped,
    # and so are those beyond the rate; both are counted.
    max_control_message_bytes: int = Field(1024, ge=64)
    control_messages_per_s: float = Field(20, gt=0)
    # A WebSocket client that drops may reconnect with its token this long after, to the
    # same session (history, avatar); after that the session ends.
    resume_ttl_s: float = Field(30.0, ge=0)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    mjpeg: MjpegSettings = Field(default_factory=MjpegSettings)
    # The longest audio file a session may be given to lip-sync (POST /api/inference/start).
    max_audio_s: float = Field(300.0, gt=0)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)

    @field_validator("candidate_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, networks: list[str], info) -> list[str]:
        import ipaddress

        for network in networks:
            try:
                ipaddress.ip_network(network)
            except ValueError as exc:
                raise ValueError(f"{info.field_name}: {exc}") from None
        return networks


class StageSettings(_Strict):
    backend: str
    options: dict[str, Any] = Field(default_factory=dict)
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions)
    # The longest a turn waits for one answer of this stage (a transcript, the next streamed
    # LLM token or TTS chunk, a lip-sync chunk) before it gives up on the turn with an error.
    timeout_s: float = Field(15.0, gt=0, le=600)


class EngineSpec(_Strict):
    """A TTS engine: a backend and its options (checked against the backend's own fields)."""

    backend: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_backend_and_options(self) -> "EngineSpec":
        from serve_app.engines.tts import check_tts_options

        check_tts_options(self.backend, self.options)
        return self


class TTSSettings(StageSettings):
    """The TTS deployment hosts the engine `backend` (+ `options`), the `engines` beside it
    and the `fallback`; GET /api/voices lists all their voices, and a character or session
    may pick any of them."""

    backend: str = "piper"
    engines: dict[str, EngineSpec] = Field(default_factory=dict)
    # Says the reply when its voice's backend fails or times out (the client gets an `error`
    # event with stage "tts" too); null: the reply is cut there. The bundled Piper voice by
    # default: local, so it does not fail with the network.
    fallback: EngineSpec | None = Field(default_factory=lambda: EngineSpec(backend="piper"))
    # A backend that failed is not asked again for this long (doubling while it keeps
    # failing, up to max_retry_after_s); its voices go straight to the fallback meanwhile.
    retry_after_s: float = Field(10.0, gt=0)
    max_retry_after_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _engines_valid(self) -> "TTSSettings":
        from serve_app.engines.tts import check_tts_options

        check_tts_options(self.backend, self.options)
        return self

    def all_engines(self) -> dict[str, EngineSpec]:
        """Every engine by name: the first is `backend`'s (named after it), and the fallback
        is "fallback" unless another engine can be it (then it is shared)."""
        main = EngineSpec(backend=self.backend, options=self.options)
        engines = {self.backend: main, **self.engines}
        if self.fallback is not None and self._shared_fallback(engines) is None:
            engines["fallback"] = self.fallback
        return engines

    def fallback_engine(self) -> str | None:
        if self.fallback is None:
            return None
        return self._shared_fallback(self.all_engines()) or "fallback"

    def _shared_fallback(self, engines: dict[str, EngineSpec]) -> str | None:
        """The engine that is the fallback already: one equal to it, or, for a fallback
        without options (the default Piper), one of its backend (Piper on CUDA, say): two
        engines offering the same voices would clash."""
        for name, spec in engines.items():
            if spec == self.fallback or (not self.fallback.options and spec.backend == self.fallback.backend):
                return name
        return None


class LipSyncSettings(StageSettings):
    backend: str = "viseme"
    # Video frames rendered per lip-sync call (5 frames = 200 ms of audio).
    chunk_frames: int = Field(5, ge=1, le=50)


class LipSyncBatching(_Strict):
    """The LipSync deployment's `user_config`: chunks from many sessions go through one model
    call. Tune on a running app (`serve deploy` / `serve run` with a new user_config)."""

    max_batch_size: int = Field(8, ge=1, le=256)  # chunks per call (x chunk_frames frames)
    # How long the first chunk waits for others: throughput for a little latency per chunk.
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)


class VADSettings(_Strict):
    """Runs inside each session actor (the VAD keeps per-stream state)."""

    backend: str = "silero"
    options: dict[str, Any] = Field(default_factory=dict)
    start_threshold: float = Field(0.5, gt=0, lt=1)
    end_threshold: float = Field(0.35, gt=0, lt=1)
    min_speech_ms: int = Field(160, ge=0)
    # Silence that ends an utterance: every ms here is reply latency.
    end_silence_ms: int = Field(300, ge=100)
    # A pause this long starts the reply speculatively (actors/speculation.py); 0 turns it off.
    speculate_after_ms: int = Field(150, ge=0)
    max_utterance_s: float = Field(20.0, gt=1)
    pre_roll_ms: int = Field(200, ge=0)

    @model_validator(mode="after")
    def _speculation_before_the_end(self) -> "VADSettings":
        if self.speculate_after_ms >= self.end_silence_ms:
            raise ValueError(
                f"speculate_after_ms ({self.speculate_after_ms}) must be below end_silence_ms "
                f"({self.end_silence_ms}), or 0 to turn speculative replies off"
            )
        return self


class LLMSettings(StageSettings):
    backend: str = "llama_cpp"
    max_tokens: int = Field(120, ge=1)
    # Exchanges kept per session; older ones are dropped to bound prompt size.
    history_turns: int = Field(6, ge=0)


class RealtimeSettings(_Strict):
    """An OpenAI-Realtime-compatible speech-to-speech server (actors/realtime.py): it hears
    the mic and answers with speech, in place of the local VAD, ASR, LLM and TTS."""

    url: str = "wss://api.openai.com/v1/realtime"  # the WebSocket endpoint; `?model=` is added
    model: str = "gpt-realtime"
    voice: str = "alloy"  # the server's voice name; a character's realtime_voice overrides it
    # Name of the variable holding the API key, sent as a bearer token; null: a local server
    # without keys.
    api_key_env: str | None = "OPENAI_API_KEY"
    # "ga": the released event and session shapes; "beta": the preview's (`OpenAI-Beta:
    # realtime=v1`), which several compatible servers still speak.
    protocol: Literal["ga", "beta"] = "ga"
    turn_detection: Literal["server_vad", "semantic_vad"] = "server_vad"
    # Transcribes the user's speech for the client's `user_transcript` events; null: none.
    transcription_model: str | None = "whisper-1"
    # Functions the model may call, by name from serve_app/engines/realtime/tools.py.
    tools: list[str] = Field(default_factory=list)
    # Tool-call rounds one reply may take: a model that keeps calling tools is stopped there
    # (an error event and the apology), so no client can make it call them without end.
    max_tool_rounds: int = Field(4, ge=1, le=32)
    connect_timeout_s: float = Field(10.0, gt=0)
    # The longest a reply waits for its next audio from the server before it fails.
    reply_timeout_s: float = Field(15.0, gt=0)
    # After a failed connection the next try waits this long (doubling to max_retry_after_s).
    retry_after_s: float = Field(2.0, gt=0)
    max_retry_after_s: float = Field(60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, url: str) -> str:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"{url!r} is not a WebSocket URL (ws:// or wss://)")
        return url

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, names: list[str]) -> list[str]:
        from serve_app.engines.realtime.tools import TOOLS

        unknown = [name for name in names if name not in TOOLS]
        if unknown:
            raise ValueError(f"unknown tools {unknown}; available: {sorted(TOOLS)}")
        return names


class ConversationSettings(_Strict):
    """Who hears and answers: `pipeline` (VAD -> ASR -> LLM -> TTS, the stages above) or
    `realtime` (one speech-to-speech server, `realtime` below; lip-sync and the TTS fallback
    voice still run here)."""

    backend: Literal["pipeline", "realtime"] = "pipeline"
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)


class AvatarSettings(_Strict):
    """Bring-your-own-avatar uploads (admin only)."""

    @field_validator("source_dirs")
    @classmethod
    def _absolute_dirs(cls, paths: list[Path]) -> list[Path]:
        return [resolve(p).resolve() for p in paths]

    # Name of the environment variable holding the admin token; unset -> uploads are refused.
    admin_token_env: str = "DH_ADMIN_TOKEN"
    max_upload_mb: float = Field(50, gt=0)
    # A preparation running longer fails (a huge or pathological file must not hold the
    # one-at-a-time job queue); a 20 s 1080p clip takes ~10 s on 2 cores.
    job_time_limit_s: float = Field(300, gt=0)
    # Folders on the server an admin may prepare avatars from by path (POST /api/avatars with
    # `path` instead of a file); empty: by upload only.
    source_dirs: list[Path] = Field(default_factory=list)
    jobs: DeploymentOptions = Field(default_factory=DeploymentOptions)


class StreamBound(_Strict):
    """How many requests of one long-lived kind an ingress replica serves at once."""

    total: int = Field(ge=1)
    per_client: int = Field(ge=1)  # from one client address (an IPv6 /64): unauthenticated too


STREAM_KINDS = ("websocket", "mjpeg", "download", "upload")
DEFAULT_STREAMS = {"websocket": StreamBound(total=24, per_client=3), "mjpeg": StreamBound(total=12, per_client=2),
                   "download": StreamBound(total=6, per_client=2), "upload": StreamBound(total=4, per_client=2)}


class LimitSettings(_Strict):
    """Request bodies are refused by size before any route parses them (serve_app/limits.py).
    Avatar uploads are bounded by avatars.max_upload_mb instead."""

    default_body_kb: float = Field(64, gt=0)  # every route not listed below
    # Per route, "METHOD /path" with path parameters as {name}.
    body_kb: dict[str, float] = Field(
        default_factory=lambda: {"POST /api/sessions/{session_id}/offer": 256}
    )
    # Long-lived requests each hold one of the ingress replica's request slots
    # (ingress.max_ongoing_requests) for as long as they last: WebSocket relays, MJPEG
    # viewers, render downloads and uploads (avatars, seed inference, renders). Each kind is
    # bounded, in total and per client, well below the slots, so short requests always find
    # one; beyond a bound the answer is 503 (total) or 429 (client) with Retry-After.
    # Kinds left out keep these.
    streams: dict[str, StreamBound] = Field(default_factory=lambda: dict(DEFAULT_STREAMS))
    # A request body that arrives slower than this, once body_grace_s have passed, is cut off
    # with 408: a trickling upload would hold its slot for as long as its sender likes.
    min_body_kb_per_s: float = Field(16, gt=0)
    body_grace_s: float = Field(5, gt=0)

    @field_validator("streams", mode="before")
    @classmethod
    def _known_kinds(cls, streams: Any) -> Any:
        if not isinstance(streams, dict):
            return streams
        unknown = set(streams) - set(STREAM_KINDS)
        if unknown:
            raise ValueError(f"unknown kind(s) {', '.join(sorted(unknown))}; the kinds are {', '.join(STREAM_KINDS)}")
        return {**DEFAULT_STREAMS, **streams}


class RenderSettings(_Strict):
    """MP4 render jobs (POST /api/renders, python -m serve_app.render)."""

    # Finished files live here until ttl_s after they are done (on the Renders replica's node).
    folder: Path = Field(default_factory=lambda: state_dir() / "renders")
    ttl_s: float = Field(3600.0, gt=0)
    max_queued: int = Field(4, ge=1)  # queued + running; more: 503 with Retry-After
    # The Renders replica runs at this CPU niceness (0-19): live sessions come first.
    nice: int = Field(10, ge=0, le=19)
    deployment: DeploymentOptions = Field(
        default_factory=lambda: DeploymentOptions(ray_actor_options={"num_cpus": 0}))


class StoreSettings(_Strict):
    """Where each session's conversation is written through (actors/store.py), so that it
    outlives the session's actor: `embedded` (an SQLite file: one machine) or `redis`
    (a cluster: every node reaches the same server)."""

    backend: Literal["embedded", "redis"] = "embedded"
    # embedded: the file (relative paths are from the project root).
    path: Path = Field(default_factory=lambda: state_dir() / "sessions.sqlite3")
    # redis: the environment variable holding the server's URL (redis://[:password@]host:port/db),
    # never the URL itself: it may carry a password.
    url_env: str = "DH_REDIS_URL"
    key_prefix: str = "digital_human:session:"
    # A session whose actor died (its node was lost) can be resumed with its token this long:
    # a reconnecting client gets a new actor with the same history. Then the record expires.
    resume_ttl_s: float = Field(600.0, gt=0)

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path


class Profile(_Strict):
    """A backend profile: which engine runs each stage and with what resources."""

    name: str = "cpu"
    avatars_dir: Path = Path("avatars")
    characters_dir: Path = Path("configs/characters")
    default_avatar: str = "default"
    default_character: str = "ava"
    avatars: AvatarSettings = Field(default_factory=AvatarSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    vad: VADSettings = Field(default_factory=VADSettings)
    asr: StageSettings = Field(default_factory=lambda: StageSettings(backend="whisper"))
    llm: LLMSettings = Field(default_factory=LLMSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    lipsync: LipSyncSettings = Field(default_factory=LipSyncSettings)
    conversation: ConversationSettings = Field(default_factory=ConversationSettings)
    ingress: IngressOptions = Field(default_factory=IngressOptions)
    session_manager: DeploymentOptions = Field(default_factory=DeploymentOptions)
    renders: RenderSettings = Field(default_factory=RenderSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @field_validator("avatars_dir", "characters_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path if path.is_absolute() else PROJECT_ROOT / path


class Character(_Strict):
    id: str
    name: str
    voice: str | None = None  # a voice id from GET /api/voices; null: the first engine's default
    voice_style: VoiceStyle = Field(default_factory=VoiceStyle)  # rate, pitch_hz, volume
    greeting: str = ""
    system_prompt: str = ""
    # Spoken when a backend fails, so the user is never left in silence.
    apology_llm: str = "Sorry, I can't think of an answer right now. Please try again in a moment."
    apology_asr: str = "Sorry, I didn't catch that."
    realtime_voice: str | None = None  # with the realtime backend; null: realtime.voice
    # Questions and answers for the realtime `faq_lookup` tool: a YAML list of
    # {question, answer}; relative paths are from the project root.
    faq_file: Path | None = None

    @field_validator("faq_file")
    @classmethod
    def _faq_exists(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        path = resolve(path)
        if not path.is_file():
            raise ValueError(f"FAQ file not found: {path}")
        return path


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc


def _validate(model: type[BaseModel], data: Any, path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def resolve(path: str | Path) -> Path:
    """Config paths are relative to the project root (Serve workers run elsewhere); ~ is home."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def load_profile(path: str | Path, overrides: dict | None = None) -> Profile:
    """The profile at `path`, with `overrides` (nested like the file, e.g.
    {"sessions": {"max_sessions": 8}}) laid over it before validation."""
    path = resolve(path)
    return _validate(Profile, _merged(_read_yaml(path), overrides or {}), path)


def _merged(base: Any, over: dict) -> Any:
    if not isinstance(base, dict):
        return over
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merged(merged.get(key), value) if isinstance(value, dict) else value
    return merged


def check_character_voices(characters: dict[str, Character], voice_ids: list[str], directory: Path) -> None:
    """Every character's voice must be one the TTS engines offer (known once they are up)."""
    for character in characters.values():
        if character.voice is not None and character.voice not in voice_ids:
            raise ConfigError(f"{directory}: character {character.id!r}: voice {character.voice!r} is not "
                              f"offered by the TTS engines (tts in the profile); available: {voice_ids}")


def check_realtime(settings: RealtimeSettings, characters: dict[str, Character]) -> None:
    """What the realtime backend needs before a session starts: its key, and each tool's data."""
    import os

    from serve_app.engines.realtime.tools import ToolBox

    if settings.api_key_env and not os.environ.get(settings.api_key_env):
        raise ConfigError(f"conversation.realtime.api_key_env: the variable {settings.api_key_env} is not set "
                          "(or api_key_env: null for a server without keys)")
    for character in characters.values():
        try:
            ToolBox(settings.tools, character)
        except ValueError as exc:
            raise ConfigError(f"conversation.realtime.tools: {exc}") from None


def load_characters(directory: Path) -> dict[str, Character]:
    """Every `*.yaml` in the characters folder, keyed by id."""
    characters = {}
    for file in sorted(directory.glob("*.yaml")):
        character = _validate(Character, _read_yaml(file), file)
        characters[character.id] = character
    if not characters:
        raise ConfigError(f"no character files (*.yaml) in {directory}")
    return characters
