"""The server-backed TTS engines against fakes that speak each service's wire protocol over
loopback (tests/fakes/tts_servers.py): audio streams as it comes, options reach the server
as configured, and every failure is a TTSUnavailable that says what happened."""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from serve_app.config import ConfigError, load_profile
from serve_app.engines.tts import TTSUnavailable, Voice, VoiceStyle, create_tts_engine
from tests.fakes.tts_servers import (
    GAP_S, WORD_S, FakeCosyVoice, FakeEdge, FakeOpenAISpeech, FakeSovits, words_of,
)

TEXT = "Hello there, how are you today?"
STYLE = VoiceStyle(rate=1.25, pitch_hz=-5, volume=0.5)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edge_options(fake, port=None) -> dict:
    endpoint = fake.endpoint if port is None else f"ws://127.0.0.1:{port}/edge/v1?TrustedClientToken=x"
    return {"voices": ["en-US-AriaNeural", "zh-CN-XiaoxiaoNeural"], "endpoint": endpoint, "timeout_s": 1}


def sovits_options(fake, port=None) -> dict:
    return {"base_url": f"http://127.0.0.1:{port or fake.port}", "timeout_s": 1, "voices": {
        "jingyuan": {"ref_audio_path": "/refs/jingyuan.wav", "prompt_text": "我是云骑将军景元。",
                     "prompt_lang": "zh", "text_lang": "en"}}}


def openai_options(fake, port=None) -> dict:
    return {"base_url": f"http://127.0.0.1:{port or fake.port}/v1", "model": "tts-1", "voices": ["nova", "alloy"],
            "api_key_env": "TEST_TTS_KEY", "timeout_s": 1}


def cosyvoice_options(fake, port=None) -> dict:
    return {"base_url": f"http://127.0.0.1:{port or fake.port}", "timeout_s": 1,
            "voices": {"sft_woman": {"spk_id": "中文女", "language": "zh"}}}


BACKENDS = {
    "edge": (FakeEdge, edge_options, 24000),
    "gpt_sovits": (FakeSovits, sovits_options, FakeSovits.RATE),
    "openai": (FakeOpenAISpeech, openai_options, FakeOpenAISpeech.RATE),
    "cosyvoice": (FakeCosyVoice, cosyvoice_options, FakeCosyVoice.RATE),
}


@pytest.fixture(autouse=True)
def tts_key(monkeypatch):
    monkeypatch.setenv("TEST_TTS_KEY", "sk-test-secret-123")


async def collect(stream) -> list:
    return [chunk async for chunk in stream]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_audio_streams_before_the_sentence_is_done(backend):
    fake_cls, options, rate = BACKENDS[backend]
    with fake_cls() as fake:
        fake.hold = threading.Event()  # nothing after the first audio until the test says so
        engine = create_tts_engine(backend, **options(fake))
        stream = engine.stream(TEXT)
        first = await stream.__anext__()
        got_first = time.monotonic()
        fake.hold.set()
        rest = await collect(stream)
    assert got_first < time.monotonic() and fake.first_audio_at_ms  # before the rest was sent
    chunks = [first, *rest]
    assert len(chunks) >= 3 and {c.sample_rate for c in chunks} == {rate}
    total_s = sum(len(c.samples) for c in chunks) / rate
    expected = len(words_of(TEXT)) * (WORD_S + GAP_S)
    assert expected - 0.05 <= total_s <= expected + 0.15, total_s  # MP3 adds a frame or two
    audio = np.concatenate([c.samples for c in chunks])
    assert audio.dtype == np.int16 and np.abs(audio).max() > 3000  # speech, not silence
    assert first.text == TEXT and all(c.text == "" for c in rest)


async def test_edge_asks_for_word_boundaries_and_sends_voice_and_prosody():
    with FakeEdge() as fake:
        engine = create_tts_engine("edge", **edge_options(fake))
        chunks = await collect(engine.stream(TEXT, "zh-CN-XiaoxiaoNeural", STYLE))
    [request] = fake.requests
    options = request["config"]["context"]["synthesis"]["audio"]
    assert options["metadataoptions"]["wordBoundaryEnabled"] == "true"
    assert options["outputFormat"] == "audio-24khz-48kbitrate-mono-mp3"
    assert "<voice name='Microsoft Server Speech Text to Speech Voice (zh-CN, XiaoxiaoNeural)'>" in request["ssml"]
    assert "pitch='-5Hz' rate='+25%' volume='-50%'" in request["ssml"]
    assert engine.voices() == [Voice("en-US-AriaNeural", "en-US"), Voice("zh-CN-XiaoxiaoNeural", "zh-CN")]
    # Word timings came with the audio, placed where the fake spoke each word.
    pos, starts = 0, []
    for chunk in chunks:
        starts += [(w.text, (pos + w.start) / 24000) for w in chunk.words or []]
        pos += len(chunk.samples)
    first_seen: dict[str, float] = {}
    for word, start in starts:  # a word reaching into the next chunk is listed there too
        first_seen.setdefault(word, start)
    assert list(first_seen) == words_of(TEXT)
    for i, word in enumerate(words_of(TEXT)):
        assert first_seen[word] == pytest.approx(i * (WORD_S + GAP_S), abs=0.01)


async def test_sovits_sends_the_voices_reference_and_languages():
    with FakeSovits() as fake:
        engine = create_tts_engine("gpt_sovits", **{**sovits_options(fake), "extra": {"top_k": 5}})
        await collect(engine.stream(TEXT, style=STYLE))
    [body] = fake.requests
    assert body["text"] == TEXT and body["text_lang"] == "en"
    assert body["ref_audio_path"] == "/refs/jingyuan.wav" and body["prompt_lang"] == "zh"
    assert body["prompt_text"] == "我是云骑将军景元。"
    assert body["streaming_mode"] is True and body["media_type"] == "wav"
    assert body["speed_factor"] == 1.25 and body["top_k"] == 5
    assert engine.voices() == [Voice("jingyuan", "en")]


async def test_sovits_raw_media_uses_the_configured_rate():
    with FakeSovits() as fake:
        engine = create_tts_engine("gpt_sovits", **sovits_options(fake), media_type="raw", sample_rate=32000)
        chunks = await collect(engine.stream(TEXT))
    assert fake.requests[0]["media_type"] == "raw"
    total_s = sum(len(c.samples) for c in chunks) / 32000
    assert total_s == pytest.approx(len(words_of(TEXT)) * (WORD_S + GAP_S), abs=0.01)


async def test_openai_sends_model_voice_speed_and_the_key_from_env():
    with FakeOpenAISpeech() as fake:
        engine = create_tts_engine("openai", **openai_options(fake), instructions="Cheerful.")
        chunks = await collect(engine.stream(TEXT, "alloy", STYLE))
    [body] = fake.requests
    assert body["model"] == "tts-1" and body["voice"] == "alloy" and body["input"] == TEXT
    assert body["response_format"] == "pcm" and body["speed"] == 1.25 and body["instructions"] == "Cheerful."
    assert body["authorization"] == "Bearer sk-test-secret-123"
    # The volume is applied here: the fake speaks at a quarter of full scale.
    assert np.abs(np.concatenate([c.samples for c in chunks])).max() < 0.15 * 32768


async def test_cosyvoice_sft_and_zero_shot_voices_and_the_announced_rate(tmp_path):
    clip = tmp_path / "me.wav"
    clip.write_bytes(b"RIFF....WAVEfake clip")
    with FakeCosyVoice(announce=False) as fake:
        options = cosyvoice_options(fake)
        options["voices"]["me"] = {"prompt_wav": str(clip), "prompt_text": "这是我的声音。"}
        engine = create_tts_engine("cosyvoice", **options, sample_rate=FakeCosyVoice.RATE)
        await collect(engine.stream("你好。"))
        await collect(engine.stream("你好。", "me"))
    sft, clone = fake.requests
    assert sft == {"path": "/inference_sft", "tts_text": "你好。", "spk_id": "中文女"}
    assert clone["path"] == "/inference_zero_shot" and clone["prompt_text"] == "这是我的声音。"
    assert clone["prompt_wav_bytes"] == clip.stat().st_size
    with FakeCosyVoice() as fake:  # float32 stream endpoints; the rate from the header
        engine = create_tts_engine("cosyvoice", **cosyvoice_options(fake), stream=True, sample_rate=8000)
        chunks = await collect(engine.stream("你好，世界。"))
    assert fake.requests[0]["path"] == "/stream/inference_sft"
    assert {c.sample_rate for c in chunks} == {FakeCosyVoice.RATE}
    assert np.abs(np.concatenate([c.samples for c in chunks])).max() > 3000  # float32 scaled right


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_hung_server_times_out(backend):
    fake_cls, options, _ = BACKENDS[backend]
    with fake_cls(mode="hang") as fake:
        engine = create_tts_engine(backend, **options(fake))
        with pytest.raises(TTSUnavailable, match="did not answer within 1 s"):
            await collect(engine.stream(TEXT))


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_closed_port_is_reported(backend):
    fake_cls, options, _ = BACKENDS[backend]
    engine = create_tts_engine(backend, **options(None, port=closed_port()))
    with pytest.raises(TTSUnavailable, match="cannot reach"):
        await collect(engine.stream(TEXT))


@pytest.mark.parametrize("backend", ["gpt_sovits", "openai", "cosyvoice"])
async def test_a_connection_dropped_mid_sentence_fails_it(backend):
    fake_cls, options, _ = BACKENDS[backend]
    with fake_cls(mode="close") as fake:
        engine = create_tts_engine(backend, **options(fake))
        with pytest.raises(TTSUnavailable):
            await collect(engine.stream(TEXT))


@pytest.mark.parametrize("backend, message", [
    ("edge", "refused the connection (HTTP 403)"),
    ("gpt_sovits", "answered HTTP 400: tts failed: ref audio is too long"),
    ("openai", "answered HTTP 400"),
    ("cosyvoice", "answered HTTP 422: spk_id not found"),
])
async def test_a_refusal_is_reported_with_the_servers_reason(backend, message):
    fake_cls, options, _ = BACKENDS[backend]
    with fake_cls(mode="error") as fake:
        engine = create_tts_engine(backend, **options(fake))
        with pytest.raises(TTSUnavailable, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            await collect(engine.stream(TEXT))
    assert "sk-test-secret" not in str(err.value)


def test_openai_without_its_key_says_which_variable(monkeypatch):
    monkeypatch.delenv("TEST_TTS_KEY")
    with pytest.raises(TTSUnavailable, match="set the environment variable TEST_TTS_KEY"):
        create_tts_engine("openai", **openai_options(None, port=1))


@pytest.mark.parametrize("tts, field", [
    ({"backend": "edge", "options": {"voices": []}}, "options.voices"),
    ({"backend": "edge", "options": {"voice": "x"}}, "options.voice"),
    ({"backend": "gpt_sovits", "options": {"voices": {"a": {"prompt_text": "hi"}}}}, "options.voices.a.ref_audio_path"),
    ({"backend": "cosyvoice", "options": {"voices": {"a": {"prompt_wav": "x.wav"}}}}, "prompt_wav needs prompt_text"),
    ({"backend": "openai", "options": {"timeout_s": -1}}, "options.timeout_s"),
    ({"backend": "piper", "options": {"lenght_scale": 1}}, "unknown options ['lenght_scale']"),
    ({"backend": "espeak"}, "unknown TTS backend 'espeak'"),
    ({"engines": {"more": {"backend": "edge", "options": {"endpoint": 3}}}}, "tts.engines.more"),
    ({"fallback": {"backend": "nope"}}, "tts.fallback"),
])
def test_bad_tts_config_is_reported_at_load_with_the_field(tts, field):
    with pytest.raises(ConfigError) as err:
        load_profile("configs/cpu.yaml", {"tts": tts})
    assert field in str(err.value), err.value
