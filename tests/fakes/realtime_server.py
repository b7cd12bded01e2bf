"""A fake OpenAI Realtime server on loopback: the Realtime WebSocket protocol (GA event names,
or the beta's with `dialect="beta"`), in a thread of its own like the other fakes.

What it does with what it hears:
- `input_audio_buffer.append`: a small energy VAD (server_vad). Speech sends
  `input_audio_buffer.speech_started` (and cancels a response being sent); 300 ms of silence
  after it sends `speech_stopped`, the user's transcript (the next of `transcripts`) and a
  response to it.
- `response.create`: a response. With instructions (a greeting, `say`) it says the text after
  their last colon; after a `function_call_output` it says the tool's answer; a question with
  "time" in it, when the session offered the `current_time` tool, is answered with that
  function call; anything else gets `reply`.
- `conversation.item.truncate` and every other client event are kept in `events`.
A response is audio deltas of the buzz-per-word speech of tts_servers.py (24 kHz PCM16, sent
faster than real time, as OpenAI's are) with its transcript deltas. `mode`: "close" stops the
next answer to the user after its third audio delta and drops the connection, "error" sends an
`error` event instead of that answer, "hang" sends three deltas and then nothing (the
connection stays open), "tool_loop" answers every tool output with the same call again.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections import deque

import numpy as np
from aiohttp import WSMsgType, web

from tests.fakes.tts_servers import FakeServer, speech

RATE = 24000
DELTA_SAMPLES = RATE // 10  # 100 ms per audio delta
VOICED_RMS = 800.0
END_SILENCE_S = 0.3

NAMES = {
    "ga": {"audio": "response.output_audio.delta", "transcript": "response.output_audio_transcript.delta",
           "audio_done": "response.output_audio.done", "item_created": "conversation.item.added"},
    "beta": {"audio": "response.audio.delta", "transcript": "response.audio_transcript.delta",
             "audio_done": "response.audio.done", "item_created": "conversation.item.created"},
}


class _Connection:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.headers = dict(request.headers)
        self.query = dict(request.query)
        self.session: dict = {}
        self.items: list[dict] = []  # the conversation: messages and function outputs
        self.speaking = False
        self.silence_s = 0.0
        self.heard_s = 0.0  # seconds of input audio
        self.response: asyncio.Task | None = None
        self.hang_up = False  # the handler closes the connection


class FakeRealtime(FakeServer):
    def __init__(self, dialect: str = "ga", reply: str = "Sure, I can help with that.") -> None:
        super().__init__()
        self.dialect = dialect
        self.reply = reply
        self.transcripts: deque[str] = deque()  # what the next utterances said
        self.events: list[dict] = []  # every client event, in order (all connections)
        self.connections: list[_Connection] = []
        self.first_delta_at_ms: list[float] = []  # each response's first audio, wall-clock ms (events' `t`)
        self._ids = itertools.count(1)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/realtime", self.socket)]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == kind]

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    async def socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=2**24)
        await ws.prepare(request)
        conn = _Connection(ws, request)
        self.connections.append(conn)
        await self._send(conn, {"type": "session.created", "session": {"id": self._id("sess")}})
        while not ws.closed:
            if conn.hang_up:
                # From this task, so that close() reads the client's messages until its close
                # reply: closing with unread data resets the connection, and the client's
                # kernel would drop what was sent before.
                await ws.close(code=1011, message=b"server going away")
                break
            try:
                message = await ws.receive(timeout=0.05)
            except asyncio.TimeoutError:
                continue
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            if message.type != WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            if event.get("type") != "input_audio_buffer.append":
                self.events.append(event)
            await self._handle(conn, event)
        if conn.response is not None:
            conn.response.cancel()
        return ws

    async def _send(self, conn: _Connection, event: dict) -> None:
        event.setdefault("event_id", self._id("event"))
        import logging; logging.getLogger("fake").debug("fake sends %s", event["type"])
        await conn.ws.send_str(json.dumps(event))
        logging.getLogger("fake").debug("fake sent %s", event["type"])

    async def _handle(self, conn: _Connection, event: dict) -> None:
        kind = event.get("type")
        if kind == "session.update":
            conn.session = event["session"]
            await self._send(conn, {"type": "session.updated", "session": conn.session})
        elif kind == "conversation.item.create":
            conn.items.append(event["item"])
            await self._send(conn, {"type": NAMES[self.dialect]["item_created"], "item": event["item"]})
        elif kind == "response.create":
            self._respond(conn, (event.get("response") or {}).get("instructions"))
        elif kind == "conversation.item.truncate":
            await self._send(conn, {"type": "conversation.item.truncated", "item_id": event["item_id"],
                                    "content_index": 0, "audio_end_ms": event["audio_end_ms"]})
        elif kind == "input_audio_buffer.append":
            await self._hear(conn, np.frombuffer(base64.b64decode(event["audio"]), np.int16))

    async def _hear(self, conn: _Connection, samples: np.ndarray) -> None:
        block = RATE // 50
        for start in range(0, len(samples), block):
            piece = samples[start:start + block].astype(np.float32)
            conn.heard_s += len(piece) / RATE
            voiced = piece.size and np.sqrt(np.mean(piece ** 2)) > VOICED_RMS
            if voiced and not conn.speaking:
                conn.speaking, conn.silence_s = True, 0.0
                if conn.response is not None and not conn.response.done():
                    conn.response.cancel()
                await self._send(conn, {"type": "input_audio_buffer.speech_started",
                                        "audio_start_ms": int(conn.heard_s * 1000), "item_id": self._id("item")})
            elif conn.speaking:
                conn.silence_s = 0.0 if voiced else conn.silence_s + len(piece) / RATE
                if conn.silence_s >= END_SILENCE_S:
                    conn.speaking = False
                    await self._utterance(conn)

    async def _utterance(self, conn: _Connection) -> None:
        item_id = self._id("item")
        text = self.transcripts.popleft() if self.transcripts else "Hello?"
        await self._send(conn, {"type": "input_audio_buffer.speech_stopped",
                                "audio_end_ms": int(conn.heard_s * 1000), "item_id": item_id})
        await self._send(conn, {"type": "input_audio_buffer.committed", "item_id": item_id})
        conn.items.append({"type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": text}]})
        self._respond(conn, None)
        await self._send(conn, {"type": "conversation.item.input_audio_transcription.completed",
                                "item_id": item_id, "content_index": 0, "transcript": text})

    def _respond(self, conn: _Connection, instructions: str | None) -> None:
        if conn.response is not None and not conn.response.done():
            conn.response.cancel()
        conn.response = asyncio.get_running_loop().create_task(self._response(conn, instructions))

    def _offered(self, conn: _Connection, tool: str) -> bool:
        return any(t.get("name") == tool for t in conn.session.get("tools") or [])

    async def _response(self, conn: _Connection, instructions: str | None) -> None:
        response_id = self._id("resp")
        await self._send(conn, {"type": "response.created", "response": {"id": response_id, "status": "in_progress"}})
        last = conn.items[-1] if conn.items else {}
        question = _text_of(last) if last.get("role") == "user" else ""
        if instructions:
            text = instructions.rsplit(":", 1)[-1].strip()
        elif last.get("type") == "function_call_output" and self.mode == "tool_loop":
            await self._function_call(conn, response_id, "current_time", {"timezone": "UTC"})
            return
        elif last.get("type") == "function_call_output":
            answer = json.loads(last["output"])
            text = f"It is {answer.get('time', 'unknown')} in {answer.get('timezone', 'UTC')}."
        elif "time" in question.lower() and self._offered(conn, "current_time"):
            await self._function_call(conn, response_id, "current_time", {"timezone": "UTC"})
            return
        else:
            text = self.reply
        answering = not instructions and last.get("role") == "user"
        if answering and self.mode == "error":
            await self._send(conn, {"type": "error", "error": {"type": "server_error", "code": "server_error",
                                                               "message": "The server had an error."}})
            return
        await self._speak(conn, response_id, text, misbehave=self.mode if answering else "ok")

    async def _function_call(self, conn: _Connection, response_id: str, name: str, arguments: dict) -> None:
        item = {"id": self._id("item"), "type": "function_call", "call_id": self._id("call"), "name": name,
                "arguments": json.dumps(arguments), "status": "completed"}
        await self._send(conn, {"type": "response.function_call_arguments.done", "response_id": response_id,
                                "item_id": item["id"], "call_id": item["call_id"], "name": name,
                                "arguments": item["arguments"]})
        await self._send(conn, {"type": "response.done",
                                "response": {"id": response_id, "status": "completed", "output": [item]}})

    async def _speak(self, conn: _Connection, response_id: str, text: str, misbehave: str) -> None:
        names = NAMES[self.dialect]
        item_id = self._id("item")
        audio, _ = speech(text, RATE)
        words = text.split()
        status = "completed"
        try:
            await self._send(conn, {"type": "response.output_item.added", "response_id": response_id,
                                    "item": {"id": item_id, "type": "message", "role": "assistant"}})
            for word in words:
                await self._send(conn, {"type": names["transcript"], "response_id": response_id,
                                        "item_id": item_id, "delta": word + " "})
            for n, start in enumerate(range(0, len(audio), DELTA_SAMPLES)):
                if n == 3 and misbehave == "close":
                    conn.hang_up = True
                    return
                if n == 3 and misbehave == "hang":
                    await asyncio.Event().wait()
                if n == 0:
                    self.first_delta_at_ms.append(time.time() * 1000)
                piece = audio[start:start + DELTA_SAMPLES].tobytes()
                await self._send(conn, {"type": names["audio"], "response_id": response_id, "item_id": item_id,
                                        "output_index": 0, "content_index": 0,
                                        "delta": base64.b64encode(piece).decode()})
                await asyncio.sleep(0)
            await self._send(conn, {"type": names["audio_done"], "response_id": response_id, "item_id": item_id})
        except asyncio.CancelledError:
            status = "cancelled"  # the user spoke over it
        conn.items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
        if not conn.ws.closed:
            await self._send(conn, {"type": "response.done", "response": {
                "id": response_id, "status": status,
                "output": [{"id": item_id, "type": "message", "role": "assistant"}]}})


def _text_of(item: dict) -> str:
    return " ".join(c.get("text") or c.get("transcript") or "" for c in item.get("content") or [])
