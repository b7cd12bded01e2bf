"""FastAPI ingress deployment: the web pages, the REST API, WebRTC signalling and the
WebSocket relay.

(No `from __future__ import annotations` here: Serve rebuilds the routes in the replica and
FastAPI must see real types, not strings.)

Stateless on purpose: sessions live in their own actors, found by name, so any number of
ingress replicas can serve any session. Every session endpoint needs the session's token
(`Authorization: Bearer <token>`); the actor checks it against the hash it holds.
"""

import asyncio
import contextlib
import logging
import mimetypes
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import ray
from fastapi import FastAPI, File, Form, Header, HTTPException, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from ray import serve

from actors.errors import CapacityError, SessionError, SessionNotFound
from actors.session import actor_name
from serve_app import limits, seed_api
from serve_app.avatars.prepare import AVATAR_ID, AvatarError, AvatarExists, validate_id
from serve_app.avatars.jobs import JobsBusy
from serve_app.forwarded import client_address, networks
from serve_app.avatars.store import AvatarNotFound, AvatarStore
from serve_app.config import PROJECT_ROOT, SESSION_NAMESPACE, Profile, load_characters
from serve_app.engines.audio import AudioDecodeError, decode_audio
from serve_app.ice import ice_servers
from serve_app.limits import LimitsMiddleware, RequestLimits, admin_refusal, bearer, bearer_matches
from serve_app.ws_relay import Relay, close_code, read_hello

log = logging.getLogger(__name__)

WEB_DIR = PROJECT_ROOT / "web"
SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
SAFE_ID = AVATAR_ID  # avatar and character ids: 1-64 letters, digits, "-" or "_" (fullmatch)

app = FastAPI(
    title="Digital Human",
    version="0.1.0",
    description="Real-time lip-synced avatars over WebRTC. Session endpoints need "
    "`Authorization: Bearer <token>` with the token returned by `POST /api/sessions`.",
)
app.mount("/static", StaticFiles(directory=WEB_DIR, check_dir=False), name="static")
app.add_middleware(LimitsMiddleware)
UPLOAD_ROUTE = "POST /api/avatars"
JOBS_RETRY_AFTER_S = 30  # avatar preparations queued to the limit: about one job's time
INFERENCE_ROUTE = "POST /api/inference/start"  # may carry an audio file
RENDER_ROUTE = "POST /api/renders"  # likewise
MULTIPART_OVERHEAD = 64 * 1024  # the form's other fields and boundaries, beside the file
# The long-lived routes, by kind (limits.streams bounds each kind).
STREAM_ROUTES = {
    "websocket": ["WS /ws/sessions/{session_id}"],
    "mjpeg": ["GET /api/sessions/{session_id}/mjpeg", "GET /api/stream/{session_id}"],
    "download": ["GET /api/renders/{job_id}/video.mp4"],
    "upload": [UPLOAD_ROUTE, INFERENCE_ROUTE, RENDER_ROUTE, "POST /api/avatar/create"],
}


ID_FIELD = {"min_length": 1, "max_length": 64}  # avatar, character and voice ids (SAFE_ID)
MAX_TEXT_FIELD = 20_000  # the schema's hard cap; sessions.max_text_chars is the usual limit


class SessionCreate(BaseModel):
    avatar: str | None = Field(None, description="avatar id from GET /api/avatars", **ID_FIELD)
    character: str | None = Field(None, description="character id from GET /api/characters", **ID_FIELD)


class SessionCreated(BaseModel):
    session_id: str
    token: str
    avatar: str
    character: str
    ice_servers: list[dict[str, Any]]


class Offer(BaseModel):
    sdp: str = Field(..., min_length=1, max_length=100_000)
    type: Literal["offer"] = "offer"


class SayRequest(BaseModel):
    text: str = Field(..., max_length=MAX_TEXT_FIELD,
                      description="at most sessions.max_text_chars characters (2000 by default)")


class RenderRequest(BaseModel):
    avatar: str = Field(..., description="avatar id from GET /api/avatars", **ID_FIELD)
    text: str | None = Field(None, max_length=MAX_TEXT_FIELD, description="spoken with `voice`; or upload `audio`")
    voice: str | None = Field(None, description="a TTS voice; default: the TTS backend's", **ID_FIELD)


class SessionUpdate(BaseModel):
    avatar: str | None = Field(None, description="switch to this avatar (id from GET /api/avatars)", **ID_FIELD)
    voice: str | None = Field(None, description="switch to this TTS voice (id from GET /api/voices)", **ID_FIELD)


@app.exception_handler(SessionError)
async def _session_error(request: Request, exc: SessionError) -> JSONResponse:
    # Ray re-raises actor errors as RayTaskError subclasses; `.cause` holds the original.
    cause = getattr(exc, "cause", None) or exc
    headers = {}
    if isinstance(cause, CapacityError):
        headers["Retry-After"] = str(cause.retry_after_s)
    return JSONResponse({"detail": str(cause)}, status_code=cause.status, headers=headers)


class SessionCalls:
    """A session actor's methods, called as `await calls.<method>.remote(...)`. A session
    that ends under a call (its actor killed between lookup and answer) is a 404, never a 500."""

    def __init__(self, handle: Any, session_id: str) -> None:
        self._handle = handle
        self._id = session_id

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        remote, session_id = getattr(self._handle, method).remote, self._id

        async def call(*args: Any) -> Any:
            try:
                return await remote(*args)
            except ray.exceptions.RayActorError:
                raise SessionNotFound(f"session {session_id} not found (it has ended)") from None

        return SimpleNamespace(remote=call)


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, profile: Profile, manager: Any, lipsync: Any, jobs: Any, renders: Any) -> None:
        self._profile = profile
        self._manager = manager
        self._lipsync = lipsync
        self._jobs = jobs
        self._renders = renders
        self._characters = load_characters(profile.characters_dir)
        self._avatars = AvatarStore(profile.avatars_dir)
        self._trusted_proxies = networks(profile.sessions.trusted_proxies)
        upload_bytes = int(profile.avatars.max_upload_mb * 1024 * 1024) + MULTIPART_OVERHEAD
        self._limits = RequestLimits(
            body_limits={**{route: int(kb * 1024) for route, kb in profile.limits.body_kb.items()},
                         UPLOAD_ROUTE: upload_bytes, INFERENCE_ROUTE: upload_bytes, RENDER_ROUTE: upload_bytes},
            default_body_bytes=int(profile.limits.default_body_kb * 1024),
            admin_routes=[UPLOAD_ROUTE],  # checked before its (large) body is read
            admin_token_env=profile.avatars.admin_token_env,
            stream_routes=STREAM_ROUTES,
            stream_bounds={kind: limits.Bound(b.total, b.per_client) for kind, b in profile.limits.streams.items()},
            client=lambda peer, forwarded: client_address(peer, forwarded, self._trusted_proxies),
            min_body_bytes_per_s=profile.limits.min_body_kb_per_s * 1024,
            body_grace_s=profile.limits.body_grace_s,
        )
        limits.install(self._limits)

    def _client_address(self, request: Request) -> str | None:
        """The client's address for quotas (serve_app/forwarded.py: proxies the profile trusts)."""
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.getlist("x-forwarded-for"), self._trusted_proxies)

    def _session(self, session_id: str) -> "SessionCalls":
        if not SESSION_ID.match(session_id):
            raise SessionNotFound(f"session {session_id} not found")
        try:
            return SessionCalls(ray.get_actor(actor_name(session_id), namespace=SESSION_NAMESPACE), session_id)
        except ValueError:
            raise SessionNotFound(f"session {session_id} not found") from None

    async def _connect(self, session_id: str, token: str | None, method: str, *args: Any) -> Any:
        """A client connecting (a WebRTC offer, a WebSocket hello) to a session whose actor
        died (its node was lost) has the manager resume it on a new actor first."""
        try:
            return await getattr(self._session(session_id), method).remote(token, *args)
        except SessionNotFound:
            if not token or not SESSION_ID.match(session_id):
                raise
            await self._manager.resume.remote(session_id, token)
            return await getattr(self._session(session_id), method).remote(token, *args)

    @app.get("/", include_in_schema=False)
    def index(self) -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/ws.html", include_in_schema=False)
    def websocket_page(self) -> FileResponse:
        return FileResponse(WEB_DIR / "ws.html")

    @app.websocket("/ws/sessions/{session_id}")
    async def session_socket(self, websocket: WebSocket, session_id: str) -> None:
        """A session over one WebSocket (README "WebSocket sessions"): hello with the token
        first, then events, audio and face out, commands and mic audio in."""
        await websocket.accept()
        settings = self._profile.sessions.websocket
        hello = await read_hello(websocket, settings.hello_timeout_s, settings.max_message_bytes)
        if hello is None:
            return
        try:
            opened = await self._connect(session_id, hello.token, "ws_open", hello.face)
            session = self._session(session_id)
        except SessionError as exc:
            await websocket.close(close_code(exc), str(getattr(exc, "cause", None) or exc)[:120])
            return
        await websocket.send_text(opened["welcome"])
        await Relay(websocket, session, opened["connection"], settings.max_message_bytes).run()

    @app.get("/api/health")
    async def health(self) -> dict:
        summary = await self._manager.summary.remote()
        return {
            "status": "ok",
            "profile": self._profile.name,
            "sessions": summary["active"],
            "max_sessions": self._profile.sessions.max_sessions,
            "warm_actors": summary["warm"],
            "admission": summary["admission"],  # accepting, and why not (measured capacity)
            "capacity": summary["capacity"],  # the cluster's session slots (sessions.slot_resource)
            "lipsync_cache": await self._lipsync.cache.remote(),  # of the replica that answered
            "request_limits": self._limits.stats.as_dict(),  # of the ingress replica that answered
            "streams": self._limits.streams.held(),  # long-lived requests it holds now, by kind
            "message": "ok",  # the MuseTalk seed's health answer is {"status", "message"}
        }

    @app.get("/api/avatars")
    def avatars(self) -> dict:
        """Read from the manifests alone (serve_app/avatars/store.py): no frame is decoded."""
        avatars = self._avatars.list()
        for avatar in avatars:
            avatar["thumbnail_url"] = f"/api/avatars/{avatar['id']}/thumbnail"
        return {"avatars": avatars, "default": self._profile.default_avatar,
                "max_upload_mb": self._profile.avatars.max_upload_mb}

    @app.get("/api/avatars/{avatar_id}/thumbnail", response_class=FileResponse)
    def thumbnail(self, avatar_id: str) -> FileResponse:
        try:
            path = self._avatars.thumbnail(avatar_id)
        except AvatarNotFound as exc:
            raise HTTPException(404, exc.args[0]) from None
        return FileResponse(path, media_type="image/png")

    # --- avatar administration (admin token) -------------------------------------------
    def _require_admin(self, authorization: str | None) -> None:
        refusal = admin_refusal(authorization, self._profile.avatars.admin_token_env)
        if refusal is not None:
            raise HTTPException(403, refusal)

    @app.post("/api/avatars", status_code=202)
    async def create_avatar(
        self,
        file: UploadFile | None = File(None, description="a photo (PNG/JPEG) or a short video of one face"),
        id: str = Form(..., description="the new avatar's id: letters, digits, '-' or '_'"),
        name: str | None = Form(None, description="display name"),
        path: str | None = Form(None, description="instead of a file: one on the server, inside a "
                                "folder listed in the profile's avatars.source_dirs"),
        authorization: str | None = Header(None),
    ) -> dict:
        """Upload an image or video (or name one on the server); preparation runs as a job
        (poll `status_url`)."""
        self._require_admin(authorization)
        try:
            avatar_id = validate_id(id)
        except AvatarError as exc:
            raise HTTPException(422, str(exc)) from None
        if (file is None) == (path is None):
            raise HTTPException(422, "send either a file or a server-side path, not both or neither")
        if path is not None:
            job = await self._queued(self._jobs.start_path.remote(str(self._allowed_source(path)), avatar_id, name))
        else:
            job = await self._queued(self._jobs.start.remote(*await self._read_upload(file), avatar_id, name))
        return {"job_id": job["id"], "avatar_id": avatar_id, "status_url": f"/api/avatars/jobs/{job['id']}"}

    @staticmethod
    async def _queued(response) -> dict:
        """A job queued on AvatarJobs, whose checks (same id, queue full) run where jobs are
        queued: no race between two uploads."""
        try:
            return await response
        except AvatarExists as exc:
            raise HTTPException(409, str(getattr(exc, "cause", None) or exc)) from None
        except JobsBusy as exc:
            raise HTTPException(429, str(getattr(exc, "cause", None) or exc),
                                headers={"Retry-After": str(JOBS_RETRY_AFTER_S)}) from None

    async def _read_upload(self, file: UploadFile) -> tuple[bytes, str]:
        kind = (file.content_type or "").split("/")[0]
        if kind not in ("image", "video"):
            raise HTTPException(415, f"expected an image or a video, got {file.content_type or 'no content type'}")
        limit = int(self._profile.avatars.max_upload_mb * 1024 * 1024)
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload is over the {self._profile.avatars.max_upload_mb:g} MB limit")
        if not data:
            raise HTTPException(422, "the uploaded file is empty")
        return data, file.filename or "upload"

    def _allowed_source(self, path: str, kinds: tuple[str, ...] = ("image", "video")) -> Path:
        """`path` resolved (links followed), if it is a media file of one of `kinds` inside an
        allowed folder."""
        allowed = self._profile.avatars.source_dirs
        if not allowed:
            raise HTTPException(403, "server-side paths are disabled; list the folders "
                                "to allow in the profile's avatars.source_dirs, or upload the file")
        source = Path(path).expanduser().resolve()
        if not any(source.is_relative_to(folder) for folder in allowed):
            # The folders are the server's layout: named to the operator's log, not the client.
            log.info("refused %s: outside avatars.source_dirs %s", source, [str(f) for f in allowed])
            raise HTTPException(403, f"{path} is outside the folders this server allows (its operator lists "
                                "them in avatars.source_dirs)")
        if not source.is_file():
            raise HTTPException(404, f"no file {path} on the server")
        kind = (mimetypes.guess_type(source.name)[0] or "").split("/")[0]
        if kind not in kinds:
            raise HTTPException(415, f"{source.name} is not {' or '.join(kinds)} (by its extension)")
        return source

    @app.get("/api/avatars/jobs/{job_id}")
    async def avatar_job(self, job_id: str, authorization: str | None = Header(None)) -> dict:
        """A preparation job: `state` (queued, running, done, failed, cancelled), `stage`,
        `percent`, and `error` when it failed."""
        self._require_admin(authorization)
        job = await self._jobs.status.remote(job_id)
        if job is None:
            raise HTTPException(404, f"no avatar job {job_id!r}")
        return job

    @app.delete("/api/avatars/jobs/{job_id}")
    async def cancel_avatar_job(self, job_id: str, authorization: str | None = Header(None)) -> dict:
        """Cancel a preparation: nothing of the avatar is left on disk."""
        self._require_admin(authorization)
        job = await self._jobs.cancel.remote(job_id)
        if job is None:
            raise HTTPException(404, f"no avatar job {job_id!r}")
        return job

    @app.delete("/api/avatars/{avatar_id}", status_code=204)
    async def delete_avatar(self, avatar_id: str, authorization: str | None = Header(None)) -> Response:
        self._require_admin(authorization)
        if not self._avatars.exists(avatar_id):
            raise HTTPException(404, f"no avatar {avatar_id!r}")
        if avatar_id == self._profile.default_avatar:
            raise HTTPException(409, f"{avatar_id!r} is the default avatar; it cannot be deleted")
        if in_use := await self._manager.sessions_using.remote(avatar_id):
            raise HTTPException(409, f"avatar {avatar_id!r} is in use by {in_use} session(s); end them or "
                                "switch them to another avatar (PATCH /api/sessions/{id}) first")
        with contextlib.suppress(AvatarNotFound):  # a racing delete got there first: gone either way
            self._avatars.delete(avatar_id)
        return Response(status_code=204)

    @app.get("/api/characters")
    def characters(self) -> dict:
        return {
            "characters": [{"id": c.id, "name": c.name, "voice": c.voice} for c in self._characters.values()],
            "default": self._profile.default_character,
        }

    @app.get("/api/voices")
    async def voices(self) -> dict:
        """Every TTS voice: `id` (for PATCH /api/sessions/{id} and a character's `voice`),
        `language`, `backend`, and which is the `default` and the `fallback`."""
        return {"voices": await self._manager.voices.remote()}

    def _check_create_key(self, authorization: str | None) -> None:
        key_env = self._profile.sessions.create_token_env
        if key_env and not bearer_matches(authorization, os.environ.get(key_env, "")):
            raise HTTPException(403, "creating a session needs the creation key (Authorization: Bearer <key>)")

    @app.post("/api/sessions", status_code=201, response_model=SessionCreated)
    async def create_session(
        self, request: Request, body: SessionCreate | None = None, authorization: str | None = Header(None)
    ) -> dict:
        """Needs `Authorization: Bearer <creation key>` when the profile names one
        (`sessions.create_token_env`)."""
        self._check_create_key(authorization)
        body = body or SessionCreate()
        for kind, value in (("avatar", body.avatar), ("character", body.character)):
            if value is not None and not SAFE_ID.fullmatch(value):
                raise HTTPException(422, f"{kind} id must be 1-64 letters, digits, '-' or '_'")
        client = self._client_address(request)
        created = await self._manager.create.remote(body.avatar, body.character, client)
        # Browsers need the TURN credential too: from the environment (never the YAML), and
        # with auth_secret_env one of their own that expires.
        return {**created, "ice_servers": ice_servers(self._profile.sessions.ice_servers, created["session_id"],
                                                              self._profile.sessions.max_lifetime_s)}

    @app.post("/api/sessions/{session_id}/offer")
    async def offer(
        self, session_id: str, body: Offer, authorization: str | None = Header(None)
    ) -> dict:
        return await self._connect(session_id, bearer(authorization), "offer", body.sdp, body.type)

    def _checked_text(self, text: str) -> str:
        limit = self._profile.sessions.max_text_chars
        if not text.strip():
            raise HTTPException(422, "text is empty")
        if len(text) > limit:
            raise HTTPException(422, f"text is {len(text)} characters; the limit is {limit}")
        return text

    @app.post("/api/sessions/{session_id}/say", status_code=202)
    async def say(
        self, session_id: str, body: SayRequest, authorization: str | None = Header(None)
    ) -> dict:
        """The avatar says exactly `text` (interrupting any current reply)."""
        session = self._session(session_id)
        return await session.say.remote(bearer(authorization), self._checked_text(body.text))

    @app.post("/api/sessions/{session_id}/ask", status_code=202)
    async def ask(
        self, session_id: str, body: SayRequest, authorization: str | None = Header(None)
    ) -> dict:
        """A typed message to the character: the LLM answers it aloud, as if it was spoken."""
        session = self._session(session_id)
        return await session.ask.remote(bearer(authorization), self._checked_text(body.text))

    @app.patch("/api/sessions/{session_id}")
    async def update_session(
        self, session_id: str, body: SessionUpdate, authorization: str | None = Header(None)
    ) -> dict:
        """Switch avatar and/or voice mid-session, without reconnecting."""
        session = self._session(session_id)
        if body.avatar is not None and not SAFE_ID.fullmatch(body.avatar):
            raise HTTPException(422, "avatar id must be 1-64 letters, digits, '-' or '_'")
        return await session.update.remote(bearer(authorization), body.avatar, body.voice)

    @app.post("/api/sessions/{session_id}/interrupt")
    async def interrupt(self, session_id: str, authorization: str | None = Header(None)) -> dict:
        return await self._session(session_id).interrupt.remote(bearer(authorization))

    @app.get("/api/sessions/{session_id}")
    async def session_info(self, session_id: str, authorization: str | None = Header(None)) -> dict:
        return await self._session(session_id).info.remote(bearer(authorization))

    @app.delete("/api/sessions/{session_id}", status_code=204)
    async def delete_session(
        self, session_id: str, authorization: str | None = Header(None)
    ) -> Response:
        if not SESSION_ID.match(session_id):
            raise SessionNotFound(f"session {session_id} not found")
        await self._manager.delete.remote(session_id, bearer(authorization))
        return Response(status_code=204)

    # --- MJPEG and the MuseTalk seed's streaming API (serve_app/seed_api.py) ---------------
    async def _mjpeg(self, session_id: str, token: str | None, fps: int) -> StreamingResponse:
        session = self._session(session_id)
        viewer = await session.mjpeg_open.remote(token, fps)  # 403/404/429 before any byte
        return StreamingResponse(seed_api.mjpeg_stream(session, viewer), media_type=seed_api.MJPEG_MEDIA_TYPE,
                                 headers={"Cache-Control": "no-store"})

    @app.get("/api/sessions/{session_id}/mjpeg", response_class=StreamingResponse)
    async def session_mjpeg(self, session_id: str, fps: int = 25, authorization: str | None = Header(None)):
        """Watch any live session as MJPEG (no audio). Needs the token."""
        return await self._mjpeg(session_id, bearer(authorization) or "", fps)

    @app.get("/api/stream/{session_id}", response_class=StreamingResponse)
    async def seed_stream(self, session_id: str, fps: int = 25):
        """MJPEG of a session started by POST /api/inference/start, for a plain <img>."""
        return await self._mjpeg(session_id, None, fps)

    @app.post("/api/avatar/create")
    async def seed_avatar_create(self, body: seed_api.AvatarCreate, authorization: str | None = Header(None)):
        """Prepare an avatar from a server-side video (inside avatars.source_dirs); answers when
        it is ready. Admin token, as for uploads."""
        self._require_admin(authorization)
        try:
            avatar_id = validate_id(body.avatar_id)
        except AvatarError as exc:
            raise HTTPException(422, str(exc)) from None
        job = await self._queued(self._jobs.start_path.remote(str(self._allowed_source(body.video_path)),
                                                             avatar_id, None))
        done = await seed_api.wait_for_job(self._jobs, job["id"], self._profile.avatars.job_time_limit_s + 30)
        if done["state"] != "done":
            message = f"preparing {avatar_id!r} failed: {done.get('error') or done['state']}"
            return JSONResponse({"status": "error", "message": message, "detail": message}, status_code=422)
        return seed_api.success(f"avatar {avatar_id} is ready", avatar_id=avatar_id)

    @app.get("/api/avatar/list")
    def seed_avatar_list(self) -> dict:
        return {"avatars": seed_api.avatar_list(self._avatars)}

    @app.post("/api/inference/start", openapi_extra=seed_api.body_schema(seed_api.InferenceStart))
    async def seed_inference_start(self, request: Request, authorization: str | None = Header(None)):
        """JSON `{"avatar_id", "audio_path" | "text", "fps", "skip_save_images"}`, or multipart
        with the same fields and an `audio` file. Starts a streaming session that lip-syncs the
        audio; watch it at `stream_url`."""
        body, upload = await self._form_or_json(request, seed_api.InferenceStart)
        self._check_avatar(body.avatar_id)
        if body.fps not in (1, 5, 25):
            raise HTTPException(422, "fps must be 25, 5 or 1 (a divisor of the session's 25 fps clock)")
        pcm = await self._speech_input(body.text, body.audio_path, upload)
        self._check_create_key(authorization)
        client = self._client_address(request)
        created = await self._manager.create.remote(body.avatar_id, body.character, client, stream=True)
        session = self._session(created["session_id"])
        try:
            if pcm is not None:
                await session.play.remote(created["token"], pcm, seed_api.AUDIO_RATE)
            else:
                await session.say.remote(created["token"], body.text)
        except Exception:
            with contextlib.suppress(Exception):
                await self._manager.delete.remote(created["session_id"], created["token"])
            raise
        stream_url = f"/api/stream/{created['session_id']}" + (f"?fps={body.fps}" if body.fps != 25 else "")
        return seed_api.success("inference started", session_id=created["session_id"], stream_url=stream_url,
                                token=created["token"])

    def _check_avatar(self, avatar_id: str) -> None:
        if not self._avatars.exists(avatar_id):
            raise HTTPException(404, f"unknown avatar {avatar_id!r}; see GET /api/avatar/list")

    async def _speech_input(self, text: str | None, audio_path: str | None, upload: bytes | None):
        """What to lip-sync: exactly one of `text` (returns None: the voice speaks it), a
        server-side audio file, or an uploaded one (returns its int16 samples at
        seed_api.AUDIO_RATE). Decoded before anything starts: a bad file leaves nothing."""
        if len([x for x in (audio_path, text, upload) if x is not None]) != 1:
            raise HTTPException(422, "give exactly one of audio_path, an uploaded audio file, or text")
        if text is not None:
            if not text.strip() or len(text) > self._profile.sessions.max_text_chars:
                raise HTTPException(422, f"text must be 1-{self._profile.sessions.max_text_chars} characters")
            return None
        source = upload if upload is not None else str(self._allowed_source(audio_path, kinds=("audio", "video")))
        try:
            return await asyncio.to_thread(decode_audio, source, seed_api.AUDIO_RATE, self._profile.sessions.max_audio_s)
        except AudioDecodeError as exc:
            raise HTTPException(422, str(exc)) from None

    async def _form_or_json(self, request: Request, model: type[BaseModel]) -> tuple[Any, bytes | None]:
        """A JSON body, or multipart with the same fields and an `audio` file."""
        kind = request.headers.get("content-type", "")
        try:
            if kind.startswith("multipart/form-data"):
                form = await request.form(max_files=1, max_fields=10)
                upload = form.get("audio")
                data = await upload.read() if upload is not None and not isinstance(upload, str) else None
                if data is not None and not data:
                    raise HTTPException(422, "the uploaded audio file is empty")
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
                return model.model_validate(fields), data
            return model.model_validate_json(await request.body()), None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise HTTPException(422, f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}") from None

    @app.post("/api/inference/stop/{session_id}")
    async def seed_inference_stop(self, session_id: str) -> dict:
        await self._session(session_id).stop_stream.remote()
        return seed_api.success(f"session {session_id} stopped")

    # --- MP4 renders (actors/render.py) -----------------------------------------------------
    @app.post("/api/renders", status_code=202, openapi_extra=seed_api.body_schema(RenderRequest))
    async def create_render(self, request: Request, authorization: str | None = Header(None)) -> dict:
        """JSON `{"avatar", "text", "voice"?}`, or multipart with `avatar` and an `audio` file:
        renders an MP4 (H.264 + AAC, 25 fps) as a job; poll `status_url`, then download."""
        body, upload = await self._form_or_json(request, RenderRequest)
        self._check_avatar(body.avatar)
        pcm = await self._speech_input(body.text, None, upload)
        self._check_create_key(authorization)
        job = await self._renders.start.remote(body.avatar, body.voice, body.text, pcm, seed_api.AUDIO_RATE)
        return {**job, **self._render_urls(job["id"])}

    @staticmethod
    def _render_urls(job_id: str) -> dict:
        return {"status_url": f"/api/renders/{job_id}", "download_url": f"/api/renders/{job_id}/video.mp4"}

    @app.get("/api/renders/{job_id}")
    async def render_status(self, job_id: str) -> dict:
        """`state`: queued, synthesising, rendering, encoding, done, failed or cancelled;
        `percent` once the length is known; `error` when it failed."""
        job = await self._renders.status.remote(job_id) if SESSION_ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, f"no render {job_id!r} (finished renders are kept for renders.ttl_s)")
        return {**job, **self._render_urls(job_id)}

    @app.get("/api/renders/{job_id}/video.mp4", response_class=StreamingResponse)
    async def render_download(self, job_id: str):
        job = await self.render_status(job_id)
        if job["state"] != "done":
            raise HTTPException(409, f"render {job_id} is {job['state']}, not done")

        async def chunks():
            offset = 0
            while data := await self._renders.read.remote(job_id, offset):
                offset += len(data)
                yield data

        return StreamingResponse(chunks(), media_type="video/mp4", headers={
            "Content-Length": str(job["bytes"]), "Content-Disposition": f'attachment; filename="{job_id}.mp4"'})

    @app.delete("/api/renders/{job_id}")
    async def delete_render(self, job_id: str) -> dict:
        """Cancel a render, or remove a finished one and its file."""
        await self.render_status(job_id)
        return await self._renders.cancel.remote(job_id)

