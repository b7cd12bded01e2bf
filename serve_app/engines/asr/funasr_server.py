"""Client for a FunASR runtime server (funasr-runtime-sdk docker, or funasr_wss_server.py).

The protocol (FunASR runtime/docs/websocket_protocol.md): a JSON start message, the audio as
binary int16 PCM frames, {"is_speaking": false}, then JSON results. How the servers end an
utterance differs: the C++ offline server sends one {"mode": "offline", "is_final": false}, the
2pass server sends "2pass-offline" pieces and a last one with "is_final": true. So the answer is
complete at the first "offline" message (as FunASR's own client reads it) or at "is_final": true.
"""
from __future__ import annotations

import asyncio
import json
import ssl as ssl_lib
import uuid

import numpy as np
import websockets

from ..audio import to_int16
from .base import SAMPLE_RATE, ASRUnavailable, Transcript

_MODES = ("offline", "2pass")
# 60 ms frames, the size FunASR's client sends with chunk_size [5, 10, 5], chunk_interval 10.
_FRAME_BYTES = SAMPLE_RATE * 60 // 1000 * 2


class FunASRServerClient:
    """An ASREngine that sends each utterance to a FunASR websocket server."""

    def __init__(
        self,
        url: str = "ws://127.0.0.1:10095",
        mode: str = "offline",
        timeout_s: float = 10.0,
        ssl: bool = False,
        itn: bool = True,
        hotwords: dict[str, int] | None = None,
    ) -> None:
        """``ssl=True`` connects with TLS without checking the certificate: the runtime SDK
        starts with TLS on and a self-signed certificate. A wss:// URL with ``ssl=False`` checks
        the certificate as usual."""
        if mode not in _MODES:
            raise ValueError(f"FunASR server mode must be one of {_MODES}, not {mode!r}")
        if ssl and url.startswith("ws://"):
            url = "wss://" + url[len("ws://") :]
        self.url = url
        self.mode = mode
        self.timeout_s = timeout_s
        self._itn = itn
        self._hotwords = json.dumps(hotwords, ensure_ascii=False) if hotwords else ""
        self._ssl_context: ssl_lib.SSLContext | None = None
        if ssl:
            self._ssl_context = ssl_lib.create_default_context()
            self._ssl_context.check_hostname = False
            self._ssl_context.verify_mode = ssl_lib.CERT_NONE

    async def transcribe(self, audio: np.ndarray, language: str | None = None) -> Transcript:
        """Send float32 mono 16 kHz audio; the whole exchange is bounded by ``timeout_s``."""
        pcm = to_int16(np.asarray(audio, dtype=np.float32).reshape(-1)).tobytes()
        try:
            async with asyncio.timeout(self.timeout_s):
                text = await self._exchange(pcm)
        except TimeoutError as e:
            raise ASRUnavailable(
                f"FunASR server {self.url} gave no final result within {self.timeout_s} s"
            ) from e
        except (OSError, websockets.WebSocketException, json.JSONDecodeError) as e:
            raise ASRUnavailable(f"FunASR server {self.url} failed: {e!r}") from e
        duration_s = len(pcm) / 2 / SAMPLE_RATE
        return Transcript(text=text.strip(), language=language, duration_s=duration_s)

    async def _exchange(self, pcm: bytes) -> str:
        # No keepalive pings, as in FunASR's own clients: the Python server blocks its event
        # loop while it decodes and would miss them.
        async with websockets.connect(
            self.url,
            subprotocols=["binary"],
            ping_interval=None,
            ssl=self._ssl_context,
            open_timeout=None,  # the caller's timeout covers the whole exchange
            max_size=None,
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "mode": self.mode,
                        "chunk_size": [5, 10, 5],
                        "chunk_interval": 10,
                        "wav_name": f"utterance-{uuid.uuid4().hex[:8]}",
                        "wav_format": "pcm",
                        "audio_fs": SAMPLE_RATE,
                        "is_speaking": True,
                        "hotwords": self._hotwords,
                        "itn": self._itn,
                    }
                )
            )
            for start in range(0, len(pcm), _FRAME_BYTES):
                await ws.send(pcm[start : start + _FRAME_BYTES])
            await ws.send(json.dumps({"is_speaking": False}))

            pieces: list[str] = []
            while True:
                message = await ws.recv()
                if not isinstance(message, str):
                    continue
                result = json.loads(message)
                # "online" / "2pass-online" results are partial guesses, superseded by the
                # offline pass.
                if result.get("mode") in ("offline", "2pass-offline"):
                    pieces.append(result.get("text", ""))
                if result.get("mode") == "offline" or result.get("is_final"):
                    return "".join(pieces)
