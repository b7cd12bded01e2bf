"""OpenAI Realtime events, both ways, in the released ("ga") and preview ("beta") shapes.

Server events are parsed into the few typed events a session acts on (the rest are None);
both names of each are accepted (`response.output_audio.delta` and the beta
`response.audio.delta`, ...), because compatible servers speak either. Client events are built
here as dicts for the socket. Audio is PCM16 mono at RATE both ways, base64 in JSON.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

RATE = 24000
Dialect = Literal["ga", "beta"]  # the released event shapes, or the preview's


# --- server -> session ------------------------------------------------------------------
@dataclass
class SpeechStarted:
    """The server's VAD heard the user start talking (the session barges in)."""


@dataclass
class SpeechStopped:
    pass


@dataclass
class UserTranscript:
    item_id: str
    text: str


@dataclass
class ResponseStarted:
    response_id: str


@dataclass
class AudioDelta:
    response_id: str
    item_id: str
    samples: np.ndarray  # int16 at RATE


@dataclass
class TranscriptDelta:
    """The reply's words: its audio transcript (or text, for a text reply)."""

    response_id: str
    text: str


@dataclass
class FunctionCall:
    call_id: str
    name: str
    arguments: str  # JSON, as the model wrote it


@dataclass
class ResponseDone:
    response_id: str
    status: str  # completed, cancelled, incomplete, failed
    calls: list[FunctionCall] = field(default_factory=list)
    reason: str = ""  # why it failed, for people


@dataclass
class RemoteError:
    message: str
    code: str = ""


ServerEvent = (SpeechStarted | SpeechStopped | UserTranscript | ResponseStarted | AudioDelta | TranscriptDelta
               | ResponseDone | RemoteError)

_AUDIO = {"response.output_audio.delta", "response.audio.delta"}
_WORDS = {"response.output_audio_transcript.delta", "response.audio_transcript.delta",
          "response.output_text.delta", "response.text.delta"}


def parse(raw: str | bytes) -> ServerEvent | None:
    """The session's view of one server message; None for the events it does not act on.
    A message that is not a JSON object raises ValueError."""
    event = json.loads(raw)
    if not isinstance(event, dict):
        raise ValueError("a realtime server message must be a JSON object")
    kind = event.get("type", "")
    if kind in _AUDIO:
        pcm = base64.b64decode(event.get("delta", ""))
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], np.int16)
        return AudioDelta(event.get("response_id", ""), event.get("item_id", ""), samples)
    if kind in _WORDS:
        return TranscriptDelta(event.get("response_id", ""), event.get("delta", ""))
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted()
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped()
    if kind == "conversation.item.input_audio_transcription.completed":
        return UserTranscript(event.get("item_id", ""), event.get("transcript", ""))
    if kind == "response.created":
        return ResponseStarted(event.get("response", {}).get("id", ""))
    if kind == "response.done":
        return _response_done(event.get("response", {}))
    if kind == "error":
        error = event.get("error") or {}
        return RemoteError(str(error.get("message") or "unknown error")[:300], str(error.get("code") or ""))
    return None


def _response_done(response: dict) -> ResponseDone:
    calls = [FunctionCall(item.get("call_id", ""), item.get("name", ""), item.get("arguments") or "{}")
             for item in response.get("output") or [] if item.get("type") == "function_call"]
    details = response.get("status_details") or {}
    error = details.get("error") or {}
    reason = str(error.get("message") or details.get("reason") or "")[:300]
    return ResponseDone(response.get("id", ""), response.get("status", "completed"), calls, reason)


# --- session -> server ------------------------------------------------------------------
def session_update(protocol: Dialect, *, instructions: str, voice: str, turn_detection: str,
                   transcription_model: str | None, tools: list[dict]) -> dict:
    """Configure the conversation: the character's instructions and voice, the server's turn
    detection, input transcription and the functions it may call."""
    detection = {"type": turn_detection}
    transcription = {"model": transcription_model} if transcription_model else None
    if protocol == "beta":
        session: dict[str, Any] = {
            "modalities": ["audio", "text"], "instructions": instructions, "voice": voice,
            "input_audio_format": "pcm16", "output_audio_format": "pcm16",
            "input_audio_transcription": transcription, "turn_detection": detection,
        }
    else:
        pcm = {"type": "audio/pcm", "rate": RATE}
        audio_in: dict[str, Any] = {"format": pcm, "turn_detection": detection}
        if transcription:
            audio_in["transcription"] = transcription
        session = {
            "type": "realtime", "instructions": instructions, "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": {"format": pcm, "voice": voice}},
        }
    if tools:
        session.update(tools=tools, tool_choice="auto")
    return {"type": "session.update", "session": session}


def append_audio(samples: np.ndarray) -> dict:
    """Mic audio, int16 at RATE."""
    return {"type": "input_audio_buffer.append",
            "audio": base64.b64encode(np.ascontiguousarray(samples, np.int16).tobytes()).decode()}


def message_item(protocol: Dialect, role: str, text: str) -> dict:
    """A past message (the kept history, replayed on a new connection) or a typed question."""
    kind = "input_text" if role == "user" else ("text" if protocol == "beta" else "output_text")
    return {"type": "conversation.item.create",
            "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}}


def function_output(call_id: str, output: str) -> dict:
    return {"type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


def truncate(item_id: str, audio_end_ms: int) -> dict:
    """The user heard the reply's audio up to `audio_end_ms`: the server forgets the rest."""
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
            "audio_end_ms": max(0, int(audio_end_ms))}


def create_response(instructions: str | None = None) -> dict:
    return {"type": "response.create", "response": {"instructions": instructions} if instructions else {}}
