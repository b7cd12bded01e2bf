"""The realtime conversation backend: an OpenAI-Realtime-compatible speech-to-speech server
hears the user and answers in speech, in place of the local VAD -> ASR -> LLM -> TTS.

The session streams the mic to it (`input_audio_buffer.append`, PCM16 24 kHz); the server's
VAD decides when the user spoke. Each reply's audio becomes one turn of the session's
TurnController, lip-synced onto the session clock like any reply and seen by every transport.
On `speech_started` the session barges in (flush, idle) and tells the server how much of the
reply the client was shown (`conversation.item.truncate`), so the model remembers saying what
the user heard and no more. Function calls go to the session's ToolBox. A remote `error`, a
closed socket or a stalled reply gives an `error` event and, when the user was owed a reply,
an apology in the TTS fallback voice; the next turn reconnects and replays the kept history.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import numpy as np
import websockets

from actors.conversation import Conversation
from actors.errors import StageFailed
from actors.turn import Marks, Turn
from actors.turn_controller import TurnController, new_turn_id
from serve_app.config import RealtimeSettings
from serve_app.engines.audio import StreamResampler, to_int16
from serve_app.engines.media import FRAME_S, SPEECH_RATE
from serve_app.engines.realtime import protocol as rt
from serve_app.engines.realtime.tools import ToolBox
from serve_app.engines.tts.base import AudioChunk
from serve_app.events import AssistantText, Error, Event, UserTranscript

log = logging.getLogger(__name__)

MIC_BATCH = rt.RATE // 25  # mic audio goes out in 40 ms messages
MAX_PENDING_MIC = 5 * rt.RATE  # mic audio kept while (re)connecting: the last 5 s
MAX_REPLY_S = 300.0  # reply audio buffered ahead of playout (servers send faster than real time)
MAX_MESSAGE_BYTES = 2**24
CLOSE_TIMEOUT_S = 2.0  # a session ending waits this long at most for the server to close in turn


class _Reply:
    """One server response: its audio on the way to a turn, its words, what was heard of it."""

    def __init__(self, response_id: str, turn_id: str, marks: Marks, answers_user: bool) -> None:
        self.response_id = response_id
        self.turn_id = turn_id
        self.marks = marks
        self.answers_user = answers_user  # a reply to speech or a typed question (recorded)
        self.item_id = ""  # the assistant message its audio belongs to
        self.audio: asyncio.Queue[np.ndarray | None] = asyncio.Queue()  # None: the end
        self.received = 0  # samples at rt.RATE
        self.turn: Turn | None = None
        self.words: list[str] = []
        self.trimmed = 0  # leading silence dropped before playout, samples
        self.cut = False  # barged in: the rest of its audio is unwanted
        self.truncated = False  # the server was told what was heard of it

    async def chunks(self, timeout_s: float, stalled: Callable[[str], None]) -> AsyncIterator[AudioChunk]:
        first = True
        while True:
            try:
                samples = await asyncio.wait_for(self.audio.get(), timeout_s)
            except TimeoutError:
                stalled(f"no reply audio within {timeout_s:g} s")
                return
            if samples is None:
                return
            chunk = AudioChunk(samples, rt.RATE)
            if first:  # as the turn does: the first chunk's silence is latency
                first = False
                trimmed = chunk.without_leading_silence()
                self.trimmed = len(chunk.samples) - len(trimmed.samples)
                chunk = trimmed
            yield chunk

    def interrupted(self) -> bool:
        """Its turn was cut before all of it was shown."""
        if self.turn is None:
            return False
        done = self.turn.playout.done
        return done.done() and done.result() == "interrupted"

    def heard_ms(self) -> int:
        """How far into its audio the client was shown, on the item's own timeline."""
        shown = self.turn.playout.frames_shown if self.turn else 0
        heard = self.trimmed + shown * FRAME_S * rt.RATE
        return int(min(heard, self.received) * 1000 / rt.RATE)


class RealtimeConversation:
    def __init__(self, core: TurnController, emit: Callable[[Event], None], conversation: Conversation,
                 settings: RealtimeSettings, *, voice: str, tools: ToolBox, api_key: str | None) -> None:
        self._core = core
        self._emit = emit
        self._conversation = conversation
        self._settings = settings
        self.voice = voice
        self._tools = tools
        self._api_key = api_key
        self._socket = None
        self._reader: asyncio.Task | None = None
        self._connecting: asyncio.Task | None = None
        self._loss: str | None = None  # why we closed the socket ourselves
        self._closing: asyncio.Task | None = None
        self._retry_at = 0.0
        self._retry_s = settings.retry_after_s
        self._reported = False  # this outage was told to the client
        self._mic = StreamResampler(SPEECH_RATE, rt.RATE)
        self._mic_out = np.zeros(0, np.int16)  # resampled, not yet a whole batch
        self._pending: deque[np.ndarray] = deque()  # batches heard while (re)connecting
        self._reply: _Reply | None = None  # the response being received
        self._playing: _Reply | None = None  # the response whose turn was started last
        self._turn_ids: deque[str] = deque()  # ids promised to the server's next responses
        self._owed = False  # the user waits for a reply (speech ended, a request was sent)
        self._tool_rounds = ("", 0)  # (turn id, tool-call rounds it has taken)
        self._speech_ended_at: float | None = None
        self._answering: str | None = None  # the turn id of the reply to the last utterance
        self._user_text: str | None = None  # the last question, not yet recorded
        self._unrecorded: str | None = None  # a reply's words, waiting for its question's transcript
        self._closed = False

    # --- what the session calls ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._socket is not None

    def start(self) -> None:
        """Connect now, so the greeting does not wait for it."""
        self._connect_soon()

    async def hear(self, audio: np.ndarray) -> None:
        """Mic audio, float32 at SPEECH_RATE."""
        self._mic_out = np.concatenate([self._mic_out, to_int16(self._mic.push(audio))])
        if len(self._mic_out) < MIC_BATCH:
            return
        batch, self._mic_out = self._mic_out, np.zeros(0, np.int16)
        if self._socket is None:
            self._pending.append(batch)
            while sum(map(len, self._pending)) > MAX_PENDING_MIC:
                self._pending.popleft()
            self._connect_soon()
            return
        await self._send(rt.append_audio(batch))

    async def greet(self, text: str) -> None:
        if text:
            await self._request([rt.create_response(f"Greet the user by saying exactly this: {text}")])

    async def say(self, text: str) -> str:
        await self.interrupt()
        return await self._request([rt.create_response(f"Say exactly this, and nothing else: {text}")])

    async def ask(self, text: str) -> str:
        """A typed question, answered like a spoken one."""
        await self.interrupt()
        self._user_text = text
        return await self._request([rt.message_item(self._settings.protocol, "user", text), rt.create_response()])

    async def interrupt(self) -> bool:
        interrupted = await self._core.interrupt()
        await self._truncate(self._playing)
        return interrupted

    async def close(self) -> None:
        self._closed = True
        for task in (self._connecting, self._reader):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()

    # --- the connection ------------------------------------------------------------------
    def _connect_soon(self) -> None:
        if (self._socket is None and self._connecting is None and not self._closed
                and time.monotonic() >= self._retry_at):
            self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _ready(self) -> bool:
        """Connected (connecting first if need be); False while the server is unreachable."""
        self._connect_soon()
        task = self._connecting
        if task is not None:
            await asyncio.shield(task)
        return self._socket is not None

    async def _connect(self) -> None:
        s = self._settings
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        if s.protocol == "beta":
            headers["OpenAI-Beta"] = "realtime=v1"
        url = f"{s.url}{'&' if '?' in s.url else '?'}model={quote(s.model)}"
        try:
            socket = await asyncio.wait_for(
                websockets.connect(url, additional_headers=headers, max_size=MAX_MESSAGE_BYTES, open_timeout=None,
                                   close_timeout=CLOSE_TIMEOUT_S),
                s.connect_timeout_s)
            await socket.send(json.dumps(rt.session_update(
                s.protocol, instructions=self._conversation.character.system_prompt, voice=self.voice,
                turn_detection=s.turn_detection, transcription_model=s.transcription_model,
                tools=self._tools.specs())))
            for message in self._conversation.prefix():  # the kept history, after a reconnect
                if message["role"] != "system":
                    await socket.send(json.dumps(rt.message_item(s.protocol, message["role"], message["content"])))
            while self._pending:  # what was said meanwhile, before anything heard from now on
                await socket.send(json.dumps(rt.append_audio(self._pending.popleft())))
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            self._retry_at = time.monotonic() + self._retry_s
            self._retry_s = min(2 * self._retry_s, s.max_retry_after_s)
            self._report(f"cannot reach {s.url}: {_connect_failure(exc, s)}")
            return
        finally:
            self._connecting = None
        log.info("realtime server connected (%s, %s)", s.url, s.model)
        self._socket, self._loss, self._reported = socket, None, False
        self._retry_s = s.retry_after_s
        self._reader = asyncio.get_running_loop().create_task(self._read(socket))

    async def _send(self, event: dict) -> bool:
        socket = self._socket
        if socket is None:
            return False
        try:
            await socket.send(json.dumps(event))
        except websockets.ConnectionClosed:
            return False  # the reader sees the loss and reports it
        return True

    def _drop(self, reason: str) -> None:
        """Give up on the connection (a stalled reply): the reader reports it as lost."""
        if self._socket is not None:
            self._loss = reason
            self._closing = asyncio.get_running_loop().create_task(self._socket.close())  # keep a reference

    async def _read(self, socket) -> None:
        reason = "the server closed the connection"
        remote_error = False
        try:
            async for message in socket:
                try:
                    event = rt.parse(message)
                except ValueError as exc:
                    log.warning("realtime server sent a bad message: %s", exc)
                    continue
                if isinstance(event, rt.RemoteError):
                    reason, remote_error = f"the server reported an error: {event.message}", True
                    break
                if event is not None:
                    await self._on(event)
        except websockets.ConnectionClosed:
            pass
        if not remote_error and socket.close_code not in (None, 1000):
            reason += f" (code {socket.close_code}{': ' + socket.close_reason if socket.close_reason else ''})"
        if not self._closed:
            await self._lost(socket, self._loss or reason, remote_error)

    async def _lost(self, socket, reason: str, remote_error: bool) -> None:
        self._socket = self._reader = None
        with contextlib.suppress(Exception):
            await socket.close()
        reply, self._reply = self._reply, None
        self._turn_ids.clear()
        owed = self._owed or (reply is not None and not reply.cut)
        self._owed = False
        log.warning("realtime connection lost: %s", reason)
        if not (owed or remote_error):
            return  # nothing was said or owed: the next turn just reconnects
        self._emit(Error(stage="realtime", turn_id=reply.turn_id if reply else None,
                         message=str(StageFailed("realtime", reason))))
        self._reported = True
        if owed:
            if reply is not None:
                reply.audio.put_nowait(None)
            await self._core.say(self._conversation.character.apology_llm, fallback_voice=True)

    def _report(self, reason: str) -> None:
        """A failed connection: told to the client once per outage."""
        log.warning("realtime: %s", reason)
        if not self._reported:
            self._reported = True
            self._emit(Error(stage="realtime", message=str(StageFailed("realtime", reason))))

    # --- requests and events -------------------------------------------------------------
    async def _request(self, events: list[dict]) -> str:
        """Send `events`, which ask for a reply; returns the id its turn will have."""
        turn_id = new_turn_id()
        if not await self._ready():
            await self._core.say(self._conversation.character.apology_llm, fallback_voice=True)
            return turn_id
        self._turn_ids.append(turn_id)
        self._owed = True
        for event in events:
            if not await self._send(event):
                break
        return turn_id

    async def _on(self, event: rt.ServerEvent) -> None:
        if isinstance(event, rt.SpeechStarted):
            playing = self._playing
            if self._reply is not None:  # the server cancels it; audio already in flight is not wanted
                self._reply.cut = True
            self._owed = False
            await self._core.speech_started()  # barge-in: flush, idle, `barge_in`
            await self._truncate(playing)
        elif isinstance(event, rt.SpeechStopped):
            self._speech_ended_at = time.monotonic()
            self._owed = True
            self._answering = new_turn_id()
            self._turn_ids.append(self._answering)
        elif isinstance(event, rt.UserTranscript):
            self._heard(event.text.strip())
        elif isinstance(event, rt.ResponseStarted):
            self._started(event.response_id)
        elif isinstance(event, rt.AudioDelta):
            await self._audio(event)
        elif isinstance(event, rt.TranscriptDelta):
            reply = self._reply
            if reply is not None and not reply.cut and event.text:
                reply.words.append(event.text)
                self._emit(AssistantText(turn_id=reply.turn_id, text=event.text, delta=True))
        elif isinstance(event, rt.ResponseDone):
            await self._done(event)

    def _heard(self, text: str) -> None:
        """The user's words (transcribed by the server, usually while it answers)."""
        if not text:
            return
        self._emit(UserTranscript(turn_id=self._answering or new_turn_id(), text=text))
        if self._unrecorded is not None:  # its reply is already done
            self._conversation.record(text, self._unrecorded)
            self._unrecorded = None
        else:
            self._user_text = text

    def _started(self, response_id: str) -> None:
        after_speech, self._speech_ended_at = self._speech_ended_at, None
        marks = Marks("speech_end", started=after_speech) if after_speech else Marks("request")
        turn_id = self._turn_ids.popleft() if self._turn_ids else new_turn_id()
        self._reply = _Reply(response_id, turn_id, marks, answers_user=after_speech is not None
                             or self._user_text is not None)

    async def _audio(self, event: rt.AudioDelta) -> None:
        reply = self._reply
        if reply is None or reply.cut or not len(event.samples):
            return
        if reply.received > MAX_REPLY_S * rt.RATE:
            return
        reply.item_id = reply.item_id or event.item_id
        reply.received += len(event.samples)
        reply.audio.put_nowait(event.samples)
        if reply.turn is None:
            reply.marks.mark("realtime_first_audio")
            self._owed = False
            await self.interrupt()  # a reply still playing is cut (and truncated) by the next
            reply.turn = await self._core.speak(reply.chunks(self._settings.reply_timeout_s, self._drop),
                                                reply.marks, reply.turn_id)
            self._playing = reply

    async def _done(self, event: rt.ResponseDone) -> None:
        reply = self._reply
        if reply is None:
            return
        self._reply = None
        reply.audio.put_nowait(None)
        if event.status == "failed":
            self._emit(Error(stage="realtime", turn_id=reply.turn_id,
                             message=str(StageFailed("realtime", event.reason or "the reply failed"))))
            if reply.turn is None:
                self._owed = False
                await self._core.say(self._conversation.character.apology_llm, fallback_voice=True)
            return
        if event.calls:  # answer the calls; the model's next response goes on with this turn
            rounds = self._tool_rounds[1] + 1 if self._tool_rounds[0] == reply.turn_id else 1
            self._tool_rounds = (reply.turn_id, rounds)
            if rounds > self._settings.max_tool_rounds:
                log.warning("realtime reply %s: tool calls stopped after %d rounds", reply.turn_id, rounds - 1)
                self._emit(Error(stage="realtime", turn_id=reply.turn_id, message=(
                    f"the model kept calling tools ({self._settings.max_tool_rounds} rounds, the most one reply "
                    "may take); ask again")))
                self._owed = False
                await self._core.say(self._conversation.character.apology_llm, fallback_voice=True)
                return
            for call in event.calls:
                log.info("realtime tool call %s", call.name)
                await self._send(rt.function_output(call.call_id, self._tools.call(call.name, call.arguments)))
            self._turn_ids.appendleft(reply.turn_id)
            self._owed = True
            await self._send(rt.create_response())
            return
        if reply.turn is None:
            self._owed = False
        if reply.answers_user and reply.words:
            words = "".join(reply.words).strip()
            if self._user_text is not None:
                self._conversation.record(self._user_text, words)
                self._user_text = None
            else:
                self._unrecorded = words

    async def _truncate(self, reply: _Reply | None) -> None:
        """The user cut `reply` short: the server keeps only the audio they were shown."""
        if reply is None or reply.truncated or not reply.interrupted():
            return
        reply.cut = reply.truncated = True
        if reply.item_id:
            await self._send(rt.truncate(reply.item_id, reply.heard_ms()))


def _connect_failure(exc: BaseException, settings: RealtimeSettings) -> str:
    """Why a connection failed, for people (never the key)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {settings.connect_timeout_s:g} s"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return (f"it refused the API key (HTTP {status}); check the variable {settings.api_key_env}"
                if settings.api_key_env else f"it wants an API key (HTTP {status}); set realtime.api_key_env")
    if status is not None:
        return f"it answered HTTP {status}"
    if isinstance(exc, OSError):
        return exc.strerror or "the connection failed"
    return str(exc)[:200] or type(exc).__name__
