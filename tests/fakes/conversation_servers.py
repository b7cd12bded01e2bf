"""Fakes of the remote conversation parts, on loopback, in a thread each (see tts_servers.py):
a FunASR runtime server (its offline websocket protocol) and an OpenAI-compatible chat
endpoint (streamed server-sent events)."""
from __future__ import annotations

import json

from aiohttp import WSMsgType, web

from tests.fakes.tts_servers import FakeServer


class FakeFunASR(FakeServer):
    """JSON start, binary PCM, {"is_speaking": false} -> one final JSON result with `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/", self.socket)]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=["binary"])
        await ws.prepare(request)
        start, pcm = None, 0
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                pcm += len(message.data)
            elif message.type == WSMsgType.TEXT:
                payload = json.loads(message.data)
                start = start or payload
                if payload.get("is_speaking") is False:
                    break
        self.requests.append({"start": start, "pcm_bytes": pcm})
        await ws.send_str(json.dumps({"mode": "offline", "text": self.text, "is_final": True,
                                      "wav_name": (start or {}).get("wav_name", "")}))
        await ws.close()
        return ws


class FakeChat(FakeServer):
    """POST /v1/chat/completions, streamed: `reply` in a few deltas."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self.chat)]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        step = max(1, len(self.reply) // 4)
        for i in range(0, len(self.reply), step):
            await response.write(b"data: " + json.dumps(self._chunk(self.reply[i:i + step])).encode() + b"\n\n")
        await response.write(b"data: " + json.dumps(self._chunk(None, "stop")).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _chunk(content: str | None, finish: str | None = None) -> dict:
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "fake",
                "choices": [{"index": 0, "delta": {} if content is None else {"content": content},
                             "finish_reason": finish}]}
