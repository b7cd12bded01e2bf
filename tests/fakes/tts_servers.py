"""Fake TTS servers that speak each service's wire protocol over a real loopback socket:
edge-tts's websocket (speech.config + SSML in; MP3 audio and word boundaries out), GPT-SoVITS
api_v2 (`POST /tts`), OpenAI's `POST /v1/audio/speech`, and CosyVoice's FastAPI endpoints.

Each fake runs in a thread with its own event loop, so Ray replicas, tests and benchmarks can
all reach it. Its "speech" is a voiced buzz per word with silence between words (the mouth
should open on the words and rest between them). `mode` makes it misbehave: "hang" (accept,
never send audio), "close" (drop the connection after the first audio), "error" (refuse).
`delay_s` waits before the first audio, and `hold` (an Event) holds everything after it:
tests use that to show a sentence's first audio arrives before the rest exists.
"""
from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
import wave

import numpy as np
from aiohttp import WSMsgType, web

WORD_S = 0.24
GAP_S = 0.12
_WORDS = re.compile(r"[A-Za-z0-9']+|[\u4e00-\u9fff]")


def words_of(text: str) -> list[str]:
    return _WORDS.findall(text)


def speech(text: str, rate: int) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """int16 audio for `text` at `rate`: a vowel-like buzz per word, silence between; and
    each word's (text, start_s, duration_s)."""
    parts, spans, t = [], [], 0.0
    n_word, n_gap = int(WORD_S * rate), int(GAP_S * rate)
    time_axis = np.arange(n_word) / rate
    envelope = np.sin(np.pi * np.arange(n_word) / n_word) ** 0.5
    buzz = sum(np.sin(2 * np.pi * 140 * k * time_axis) / k for k in range(1, 8))
    word = (0.25 * envelope * buzz / np.abs(buzz).max() * 32767).astype(np.int16)
    for w in words_of(text) or ["…"]:
        parts += [word, np.zeros(n_gap, np.int16)]
        spans.append((w, t, WORD_S))
        t += WORD_S + GAP_S
    return np.concatenate(parts), spans


class FakeServer:
    """An aiohttp app on a free loopback port, served from a thread of its own."""

    def __init__(self, mode: str = "ok", delay_s: float = 0.0) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.hold: threading.Event | None = None
        self.requests: list[dict] = []
        # When each request's first audio was written, wall-clock ms: the clock of events' `t`.
        self.first_audio_at_ms: list[float] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self.port = 0

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeServer":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.add_routes(self.routes())
        self._runner = runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def before_audio(self) -> None:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def after_first_audio(self) -> None:
        self.first_audio_at_ms.append(time.time() * 1000)
        if self.hold is not None:
            await asyncio.to_thread(self.hold.wait, 30)

    async def stream_pcm(self, request: web.Request, pcm: bytes, headers: dict | None = None,
                         piece: int = 4096, prefix: bytes = b"") -> web.StreamResponse:
        """A chunked 200 answer: `prefix` (a WAV header) and `pcm` in pieces."""
        response = web.StreamResponse(headers=headers or {})
        await response.prepare(request)
        await self.before_audio()
        if prefix:
            await response.write(prefix)
        for i in range(0, len(pcm), piece):
            await response.write(pcm[i:i + piece])
            if i == 0:
                await self.after_first_audio()
                if self.mode == "close":
                    request.transport.close()
                    return response
            await asyncio.sleep(0)
        await response.write_eof()
        return response


# --- edge-tts ------------------------------------------------------------------------------

def mp3(pcm: np.ndarray, rate: int = 24000) -> list[bytes]:
    """`pcm` as MP3 frames (24 kHz, 48 kbit/s mono, as the Edge service sends)."""
    import av

    encoder = av.CodecContext.create("libmp3lame", "w")
    encoder.sample_rate, encoder.layout, encoder.format, encoder.bit_rate = rate, "mono", "fltp", 48000
    x = pcm.astype(np.float32) / 32768.0
    packets = []
    for i in range(0, len(x), 1152):
        frame = av.AudioFrame.from_ndarray(x[i:i + 1152].reshape(1, -1), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, i
        packets += [bytes(p) for p in encoder.encode(frame)]
    return packets + [bytes(p) for p in encoder.encode(None)]


def _edge_text(path: str, body: str) -> str:
    return f"X-RequestId:fake\r\nContent-Type:application/json; charset=utf-8\r\nPath:{path}\r\n\r\n{body}"


def _edge_audio(data: bytes, content_type: bytes = b"Content-Type:audio/mpeg\r\n") -> bytes:
    """A binary message: where its headers end (2 bytes, counting themselves), the headers,
    CRLF, the audio."""
    header = b"X-RequestId:fake\r\n" + content_type + b"Path:audio"
    return (len(header) + 2).to_bytes(2, "big") + header + b"\r\n" + data


class FakeEdge(FakeServer):
    """edge-tts's service: per request, the speech.config and the SSML (voice, prosody, text)
    are recorded; then turn.start, word boundaries interleaved with MP3 audio, turn.end."""

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/edge/v1", self.socket)]

    @property
    def endpoint(self) -> str:
        return f"ws://127.0.0.1:{self.port}/edge/v1?TrustedClientToken=fake"

    async def socket(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "error":
            return web.Response(status=403, text="forbidden")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        record: dict = {"query": dict(request.query)}
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            head, _, body = message.data.partition("\r\n\r\n")
            if "Path:speech.config" in head:
                record["config"] = json.loads(body)
            elif "Path:ssml" in head:
                record["ssml"] = body
                self.requests.append(record)
                await self._speak(ws, record)
                break
        await ws.close()
        return ws

    async def _speak(self, ws: web.WebSocketResponse, record: dict) -> None:
        text = re.sub(r"<[^>]+>", "", record["ssml"])
        await ws.send_str(_edge_text("turn.start", "{}"))
        await self.before_audio()
        pcm, spans = speech(text, 24000)
        frames = mp3(pcm)
        per_word = len(frames) // max(1, len(spans))
        sent = False
        for i, (word, start, duration) in enumerate(spans):
            metadata = {"Metadata": [{"Type": "WordBoundary", "Data": {
                "Offset": int(start * 1e7), "Duration": int(duration * 1e7),
                "text": {"Text": word, "Length": len(word), "BoundaryType": "WordBoundary"}}}]}
            await ws.send_str(_edge_text("audio.metadata", json.dumps(metadata)))
            last = i == len(spans) - 1
            for frame in frames[i * per_word:(None if last else (i + 1) * per_word)]:
                await ws.send_bytes(_edge_audio(frame))
            if not sent:  # the service sends a few frames at a time; its first word, here
                sent = True
                await self.after_first_audio()
                if self.mode == "close":
                    await ws.close()
                    return
        await ws.send_bytes(_edge_audio(b"", content_type=b""))  # the end of the audio
        await ws.send_str(_edge_text("turn.end", "{}"))



# --- GPT-SoVITS api_v2 ---------------------------------------------------------------------

def wav_header(rate: int) -> bytes:
    """What api_v2 sends first in streaming mode: a WAV header for zero frames."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
    return buffer.getvalue()


class FakeSovits(FakeServer):
    RATE = 32000

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/tts", self.tts)]

    async def tts(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.mode == "error" or not body.get("ref_audio_path"):
            return web.json_response({"message": "tts failed", "Exception": "ref audio is too long"}, status=400)
        pcm, _ = speech(body["text"], self.RATE)
        wav = body.get("media_type", "wav") == "wav"
        return await self.stream_pcm(request, pcm.tobytes(), prefix=wav_header(self.RATE) if wav else b"")


# --- OpenAI /v1/audio/speech -----------------------------------------------------------------

class FakeOpenAISpeech(FakeServer):
    RATE = 24000

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/audio/speech", self.speech)]

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({**body, "authorization": request.headers.get("Authorization")})
        if self.mode == "error":
            return web.json_response({"error": {"message": "Invalid voice", "type": "invalid_request_error"}},
                                     status=400)
        pcm, _ = speech(body["input"], self.RATE)
        return await self.stream_pcm(request, pcm.tobytes(), {"Content-Type": "audio/pcm"})


# --- CosyVoice FastAPI server --------------------------------------------------------------

class FakeCosyVoice(FakeServer):
    """`/inference_sft` and `/inference_zero_shot` as int16, the `/stream/...` ones as float32;
    announces its rate in X-Custom-Header-sampleRate unless `announce` is False."""

    RATE = 22050

    def __init__(self, mode: str = "ok", delay_s: float = 0.0, announce: bool = True) -> None:
        super().__init__(mode, delay_s)
        self.announce = announce

    def routes(self) -> list[web.RouteDef]:
        return [web.post(path, self.inference) for path in (
            "/inference_sft", "/inference_zero_shot", "/stream/inference_sft", "/stream/inference_zero_shot")]

    async def inference(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        record = {"path": request.path, **{k: v for k, v in form.items() if isinstance(v, str)}}
        if "prompt_wav" in form:
            record["prompt_wav_bytes"] = len(form["prompt_wav"].file.read())
        self.requests.append(record)
        if self.mode == "error":
            return web.json_response({"detail": "spk_id not found"}, status=422)
        pcm, _ = speech(form["tts_text"], self.RATE)
        data = (pcm.astype(np.float32) / 32768).tobytes() if request.path.startswith("/stream") else pcm.tobytes()
        headers = {"X-Custom-Header-sampleRate": str(self.RATE)} if self.announce else {}
        return await self.stream_pcm(request, data, headers)
