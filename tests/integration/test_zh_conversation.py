"""A Chinese conversation through configs/zh.yaml, with fakes for its remote parts (a FunASR
runtime server, an OpenAI-compatible LLM, edge-tts): a spoken question gives a Chinese
transcript, a Chinese reply, and Chinese speech with mouth motion at the client."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serve_app.client import AvatarSession, MicTrack
from serve_app.config import PROJECT_ROOT
from tests.fakes.conversation_servers import FakeChat, FakeFunASR
from tests.fakes.tts_servers import FakeEdge, words_of
from tests.integration.test_session_media import OPEN, SPEECH_RMS, open_mouth_pixels

pytestmark = pytest.mark.integration

QUESTION = "今天天气怎么样？"
REPLY = "今天天气很好，阳光明媚。适合出去走走！"


@pytest.fixture(scope="module")
async def zh_app(app_url, tmp_path_factory):
    import yaml
    from ray import serve

    from serve_app.app import build_app
    from serve_app.local_cluster import run_app

    fakes = {"asr": FakeFunASR(QUESTION), "llm": FakeChat(REPLY), "tts": FakeEdge()}
    for fake in fakes.values():
        fake.start()
    free = {"ray_actor_options": {"num_cpus": 0}}
    overrides = {
        "sessions": {"warm_pool": 0, "actor_num_cpus": 0, "admission": {"enabled": False}},
        "asr": {"deployment": free},
        "llm": {"options": {"base_url": fakes["llm"].url + "/v1", "api_key_env": None}, "deployment": free},
        "tts": {"options": {"endpoint": fakes["tts"].endpoint}, "deployment": free},
        "lipsync": {"deployment": free},
        "ingress": free,
    }
    # zh.yaml with its ASR on a FunASR runtime server (the fake) instead of a local model.
    profile = yaml.safe_load((PROJECT_ROOT / "configs" / "zh.yaml").read_text())
    profile["asr"] = {"backend": "funasr_server", "options": {"url": fakes["asr"].ws_url, "timeout_s": 10}}
    path = tmp_path_factory.mktemp("zh") / "zh.yaml"
    path.write_text(yaml.safe_dump(profile, allow_unicode=True))
    app = build_app({"profile": str(path), "overrides": overrides})
    await asyncio.to_thread(run_app, app, "zh", "/zh", timeout_s=120)
    yield f"{app_url}/zh", fakes
    await asyncio.to_thread(serve.delete, "zh")
    for fake in fakes.values():
        fake.stop()


def spoken_question() -> tuple[np.ndarray, int]:
    """A voice asking (Piper reads the pinyin; the fake ASR server hears the Chinese)."""
    from serve_app.engines.tts.piper_tts import PiperTTS

    async def synthesize():
        return [c async for c in PiperTTS().stream("Jin tian tian qi zen me yang?")]

    chunks = asyncio.run(synthesize())
    return np.concatenate([c.samples for c in chunks]), chunks[0].sample_rate


async def test_a_chinese_question_is_answered_in_chinese_with_mouth_motion(zh_app):
    url, fakes = zh_app
    question, rate = await asyncio.to_thread(spoken_question)
    mic = MicTrack()
    session = await AvatarSession(url, mic=mic, keep_frames=open_mouth_pixels).start()
    try:
        greeting = await session.wait_event(lambda e: e["type"] == "assistant_text", 30)
        assert greeting["text"].startswith("你好，我是晓晓")
        await session.interrupt()
        mic.play(question, sample_rate=rate)
        transcript = await session.wait_event(lambda e: e["type"] == "user_transcript", 60)
        assert transcript["text"] == QUESTION
        turn_id = transcript["turn_id"]
        speaking = await session.wait_event(lambda e: e["type"] == "state" and e["state"] == "speaking"
                                            and e.get("turn_id") == turn_id, 60)
        end = await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, 60)
        assert end["interrupted"] is False
        texts = "".join(e["text"] for e in session.received.events
                        if e["type"] == "assistant_text" and e.get("turn_id") == turn_id)
        assert texts.replace(" ", "") == REPLY
        # The first clause went to the voice on its own, before the rest of the reply.
        said = [r["ssml"] for r in fakes["tts"].requests if "阳光" in r["ssml"] or "今天天气很好" in r["ssml"]]
        assert "今天天气很好，</prosody>" in said[0], said
        assert "zh-CN, XiaoxiaoNeural" in said[0]
        # The LLM heard the character's Chinese prompt and the question.
        chat = fakes["llm"].requests[-1]["messages"]
        assert chat[0]["role"] == "system" and "晓晓" in chat[0]["content"]
        assert chat[-1] == {"role": "user", "content": QUESTION}
        assert fakes["asr"].requests[-1]["start"]["audio_fs"] == 16000
        video = [v for v in session.received.video if speaking["received_at"] <= v.t <= end["received_at"]]
        audio = [a for a in session.received.audio if speaking["received_at"] <= a.t <= end["received_at"]]
        assert len(video) >= 25 * len(words_of(REPLY)) * 0.3  # about 0.36 s per character
        assert np.mean([a.rms > SPEECH_RMS for a in audio]) > 0.3
        openness = np.array([v.frame for v in video])
        assert np.mean(openness > OPEN) > 0.2 and openness.min() < OPEN
        assert not [e for e in session.received.events if e["type"] == "error"]
    finally:
        await session.close()
