from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import types
import wave
from pathlib import Path

import numpy as np
import pytest
import websockets

from serve_app.engines.asr import ASRUnavailable, create_asr_engine
from serve_app.engines.asr.funasr_local import FunASRLocal, clean_text
from serve_app.engines.asr.funasr_server import FunASRServerClient
from serve_app.engines.asr.whisper import FasterWhisperASR
from serve_app.engines.audio import to_int16


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    """A real voice saying "What is the weather like today?", as float32 16 kHz (what the
    session's VAD hands on). A fixed clip (Piper's en_US voice, saved once): Piper's synthesis
    varies from run to run, and on some runs the two windows below heard "light" for "like",
    so word-for-word comparisons on fresh audio were a coin toss."""
    with wave.open(str(FIXTURES / "weather_question.wav")) as clip:
        assert (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperASR:
    return FasterWhisperASR()


# --- Whisper -------------------------------------------------------------------------------


async def test_whisper_transcribes_speech(whisper, utterance):
    transcript = await whisper.transcribe(utterance)
    assert "weather" in transcript.text.lower() and "today" in transcript.text.lower()
    assert transcript.text == transcript.text.strip()
    assert transcript.language == "en"
    assert transcript.duration_s == pytest.approx(len(utterance) / 16000)


async def test_whisper_hears_nothing_in_silence(whisper):
    transcript = await whisper.transcribe(np.zeros(32000, np.float32))
    assert len(transcript.text) <= 3, transcript.text


async def test_whisper_does_not_block_the_event_loop(whisper, utterance):
    # Started as a task, a transcription that ran on the loop would be over by the time the
    # loop comes back here; one that runs in a thread lets the loop go round meanwhile.
    task = asyncio.create_task(whisper.transcribe(utterance))
    rounds = 0
    await asyncio.sleep(0)  # the task starts
    while not task.done():
        rounds += 1
        await asyncio.sleep(0.001)
    assert rounds >= 1
    assert "weather" in (await task).text.lower()


async def test_fitted_window_transcribes_like_the_full_window(whisper, utterance):
    # The default engine encodes only the utterance (whisper_window.py); the decoder must still
    # end its text (no "today? today?" loop) and hear the same words as on the 30 s window.
    fitted = whisper._fitted.transcribe(utterance, "en", beam_size=1)
    assert fitted is not None
    full = FasterWhisperASR(fitted_window=False)._transcribe(utterance, "en").text
    assert words(fitted) == words(full) == ["what", "is", "the", "weather", "like", "today"]


def test_fitted_window_leaves_long_audio_to_the_full_window(whisper, utterance):
    long = np.concatenate([utterance] * 20)  # > 30 s
    assert len(long) > 30 * 16000
    assert whisper._fitted.transcribe(long, "en", beam_size=1) is None
    assert "weather" in whisper._transcribe(long, "en").text.lower()  # the full path took it


def words(text: str) -> list[str]:
    return "".join(ch for ch in text.lower() if ch.isalpha() or ch == " ").split()


def test_whisper_missing_model_dir_is_named(tmp_path):
    with pytest.raises(ASRUnavailable, match="not found") as info:
        FasterWhisperASR(model=str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(info.value)
    with pytest.raises(ASRUnavailable, match="model.bin") as info:
        FasterWhisperASR(model=str(tmp_path))
    assert "tokenizer.json" in str(info.value)


# --- FunASR, local model directories ------------------------------------------------------


def _funasr_modules() -> list[str]:
    return [m for m in sys.modules if m == "funasr" or m.startswith("funasr.")]


def test_funasr_missing_dir_fails_before_importing_funasr(tmp_path):
    missing = tmp_path / "SenseVoiceSmall"
    with pytest.raises(ASRUnavailable) as info:
        FunASRLocal(model_dir=str(missing))
    message = str(info.value)
    assert str(missing) in message and "not found" in message
    assert "config.yaml" in message and "model.pt" in message
    assert "iic/SenseVoiceSmall" in message
    assert not _funasr_modules()


def test_funasr_empty_dir_names_missing_files(tmp_path):
    with pytest.raises(ASRUnavailable) as info:
        FunASRLocal(model_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and "lacks config.yaml, model.pt" in message
    assert not _funasr_modules()


def test_funasr_onnx_export_is_told_apart(tmp_path):
    (tmp_path / "config.yaml").write_text("model: SenseVoiceSmall\n")
    (tmp_path / "model_quant.onnx").write_bytes(b"")
    with pytest.raises(ASRUnavailable, match="ONNX export") as info:
        FunASRLocal(model_dir=str(tmp_path))
    assert "lacks model.pt" in str(info.value)


def test_funasr_checks_vad_and_punc_dirs_too(tmp_path):
    model = tmp_path / "asr"
    model.mkdir()
    (model / "config.yaml").write_text("model: SenseVoiceSmall\n")
    (model / "model.pt").write_bytes(b"")
    with pytest.raises(ASRUnavailable, match="vad_model directory not found") as info:
        FunASRLocal(model_dir=str(model), vad_model_dir=str(tmp_path / "vad"))
    assert "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch" in str(info.value)
    with pytest.raises(ASRUnavailable, match="punc_model directory not found"):
        FunASRLocal(model_dir=str(model), punc_model_dir=str(tmp_path / "punc"))
    assert not _funasr_modules()


def test_funasr_complete_dir_without_funasr_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text("model: SenseVoiceSmall\n")
    (tmp_path / "model.pt").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "funasr", None)  # as if not installed, even where it is
    with pytest.raises(ASRUnavailable, match=r"pip install funasr torch==2\.13\.0"):
        FunASRLocal(model_dir=str(tmp_path))


async def test_funasr_builds_automodel_offline_and_cleans_its_text(tmp_path, monkeypatch):
    """funasr itself is not installed here: a stand-in module records what the engine asks."""
    dirs = {}
    for name in ("asr", "vad"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "config.yaml").write_text("model: Whatever\n")
        (dirs[name] / "model.pt").write_bytes(b"")
    calls: dict = {}

    class AutoModel:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def generate(self, input, **kwargs):
            calls["generate"] = (input, kwargs)
            return [{"key": "x", "text": "<|zh|><|NEUTRAL|><|Speech|><|withitn|>今天天气怎么样？"}]

    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=AutoModel))
    engine = FunASRLocal(model_dir=str(dirs["asr"]), vad_model_dir=str(dirs["vad"]))
    assert calls["init"]["model"] == str(dirs["asr"])
    assert calls["init"]["vad_model"] == str(dirs["vad"])
    assert calls["init"]["disable_update"] is True and calls["init"]["device"] == "cpu"

    audio = np.zeros(8000, np.float32)
    audio.flags.writeable = False  # as numpy arguments arrive through Ray
    transcript = await engine.transcribe(audio)
    assert transcript.text == "今天天气怎么样？" and transcript.language == "zh"
    assert transcript.duration_s == pytest.approx(0.5)
    sent, options = calls["generate"]
    assert sent.dtype == np.float32 and sent.flags.writeable and len(sent) == 8000
    assert options["language"] == "auto"


def test_sensevoice_tags_are_stripped_and_language_kept():
    assert clean_text("<|zh|><|NEUTRAL|><|Speech|><|withitn|>今天天气怎么样？") == (
        "今天天气怎么样？",
        "zh",
    )
    assert clean_text("欢迎大家来体验达摩院推出的语音识别模型") == (
        "欢迎大家来体验达摩院推出的语音识别模型",
        None,
    )


# --- FunASR runtime server ------------------------------------------------------------------


class FakeFunASRServer:
    """Speaks the FunASR runtime's offline protocol: JSON start, binary PCM, is_speaking false,
    then one JSON result. ``answer=False`` makes it swallow the audio and never reply."""

    def __init__(self, text: str = "今天天气怎么样", answer: bool = True) -> None:
        self.text = text
        self.answer = answer
        self.start: dict | None = None
        self.pcm = b""
        self.subprotocol: str | None = None

    async def handler(self, ws) -> None:
        self.subprotocol = ws.subprotocol
        self.start = json.loads(await ws.recv())
        async for message in ws:
            if isinstance(message, bytes):
                self.pcm += message
            elif json.loads(message).get("is_speaking") is False:
                break
        if self.answer:
            result = {"mode": "offline", "text": self.text, "wav_name": self.start["wav_name"]}
            await ws.send(json.dumps({**result, "is_final": True}))
        await ws.wait_closed()


async def _serve(fake: FakeFunASRServer):
    server = await websockets.serve(fake.handler, "127.0.0.1", 0, subprotocols=["binary"])
    port = server.sockets[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}"


async def test_funasr_server_client_speaks_the_protocol(utterance):
    fake = FakeFunASRServer()
    server, url = await _serve(fake)
    try:
        transcript = await FunASRServerClient(url).transcribe(utterance, language="zh")
    finally:
        server.close()
        await server.wait_closed()
    assert transcript.text == "今天天气怎么样"
    assert transcript.language == "zh"
    assert transcript.duration_s == pytest.approx(len(utterance) / 16000)
    assert fake.subprotocol == "binary"
    assert fake.start is not None
    assert fake.start["mode"] == "offline" and fake.start["is_speaking"] is True
    assert fake.start["wav_format"] == "pcm" and fake.start["audio_fs"] == 16000
    assert fake.start["chunk_size"] == [5, 10, 5] and fake.start["itn"] is True
    received = np.frombuffer(fake.pcm, np.int16)
    assert len(received) == len(utterance)
    np.testing.assert_array_equal(received, to_int16(utterance))


async def test_funasr_server_joins_2pass_offline_pieces_until_final():
    async def handler(ws) -> None:
        async for message in ws:
            if isinstance(message, str) and json.loads(message).get("is_speaking") is False:
                break
        for result in (
            {"mode": "2pass-online", "text": "今天", "is_final": False},
            {"mode": "2pass-offline", "text": "今天天气", "is_final": False},
            {"mode": "2pass-offline", "text": "怎么样？", "is_final": True},
        ):
            await ws.send(json.dumps(result))
        await ws.wait_closed()

    server = await websockets.serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = FunASRServerClient(f"ws://127.0.0.1:{port}", mode="2pass")
        transcript = await client.transcribe(np.zeros(1600, np.float32))
    finally:
        server.close()
        await server.wait_closed()
    assert transcript.text == "今天天气怎么样？"


async def test_funasr_server_unreachable_fails_fast():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    with pytest.raises(ASRUnavailable) as info:
        await FunASRServerClient(url, timeout_s=5).transcribe(np.zeros(1600, np.float32))
    assert url in str(info.value) and "ConnectionRefused" in str(info.value)


async def test_funasr_server_that_never_answers_times_out():
    fake = FakeFunASRServer(answer=False)
    server, url = await _serve(fake)
    started = time.perf_counter()
    try:
        with pytest.raises(ASRUnavailable, match="no final result within 0.5 s") as info:
            await FunASRServerClient(url, timeout_s=0.5).transcribe(np.zeros(16000, np.float32))
    finally:
        server.close()
        await server.wait_closed()
    assert time.perf_counter() - started >= 0.5  # it did wait for the timeout
    assert url in str(info.value)
    assert len(fake.pcm) == 32000  # it did send everything, then waited


# --- registry -------------------------------------------------------------------------------


def test_registry_builds_by_name_and_rejects_unknown():
    client = create_asr_engine("funasr_server", url="ws://127.0.0.1:1", timeout_s=1)
    assert isinstance(client, FunASRServerClient)
    with pytest.raises(ValueError, match="Unknown ASR engine 'nope'") as info:
        create_asr_engine("nope")
    for name in ("whisper", "funasr", "funasr_server"):
        assert name in str(info.value)
