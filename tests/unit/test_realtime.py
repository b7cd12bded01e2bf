"""The realtime conversation backend without Ray: its wire protocol, its tools, and
RealtimeConversation driving a real TurnController from a fake Realtime server over a real
loopback WebSocket (tests/fakes/realtime_server.py), with the screen advanced by the test."""
from __future__ import annotations

import asyncio
import datetime as dt
import json

import numpy as np
import pytest

from actors.realtime import RealtimeConversation
from serve_app.config import Character, ConfigError, RealtimeSettings, load_profile
from serve_app.engines.audio import to_float32
from serve_app.engines.realtime import protocol as rt
from serve_app.engines.realtime.tools import ToolBox
from tests.fakes.realtime_server import FakeRealtime
from tests.fakes.tts_servers import speech
from tests.unit.test_turn_controller import WAIT_S, Session

LONG_REPLY = " ".join(["word"] * 30)  # ~11 s of speech: time to talk over it
NOON = dt.datetime(2026, 12, 2, 12, 34, tzinfo=dt.timezone.utc)


# --- the protocol -----------------------------------------------------------------------
@pytest.mark.parametrize("audio, words", [
    ("response.output_audio.delta", "response.output_audio_transcript.delta"),
    ("response.audio.delta", "response.audio_transcript.delta"),
])
def test_both_dialects_reply_events_parse_alike(audio, words):
    pcm = np.arange(-5, 5, dtype=np.int16)
    delta = rt.parse(json.dumps({"type": audio, "response_id": "r1", "item_id": "i1",
                                 "delta": __import__("base64").b64encode(pcm.tobytes()).decode()}))
    assert isinstance(delta, rt.AudioDelta) and delta.item_id == "i1" and delta.samples.tolist() == pcm.tolist()
    assert rt.parse(json.dumps({"type": words, "response_id": "r1", "delta": "Hi"})) == rt.TranscriptDelta("r1", "Hi")


def test_response_done_carries_function_calls_and_failures():
    done = rt.parse(json.dumps({"type": "response.done", "response": {"id": "r", "status": "completed", "output": [
        {"type": "message"}, {"type": "function_call", "call_id": "c1", "name": "current_time", "arguments": "{}"}]}}))
    assert done.calls == [rt.FunctionCall("c1", "current_time", "{}")]
    failed = rt.parse(json.dumps({"type": "response.done", "response": {
        "id": "r", "status": "failed", "status_details": {"error": {"message": "quota exceeded"}}}}))
    assert failed.status == "failed" and failed.reason == "quota exceeded"
    assert rt.parse('{"type": "error", "error": {"message": "bad", "code": "x"}}') == rt.RemoteError("bad", "x")
    assert rt.parse('{"type": "rate_limits.updated"}') is None
    with pytest.raises(ValueError):
        rt.parse("[1, 2]")


def test_session_update_in_each_dialect():
    tools = ToolBox(["current_time"], None).specs()
    ga = rt.session_update("ga", instructions="Be brief.", voice="marin", turn_detection="semantic_vad",
                           transcription_model="whisper-1", tools=tools)["session"]
    assert ga["type"] == "realtime" and ga["audio"]["output"]["voice"] == "marin"
    assert ga["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert ga["audio"]["input"]["turn_detection"] == {"type": "semantic_vad"}
    assert ga["tools"][0]["name"] == "current_time" and ga["tool_choice"] == "auto"
    beta = rt.session_update("beta", instructions="Be brief.", voice="alloy", turn_detection="server_vad",
                             transcription_model=None, tools=[])["session"]
    assert beta["voice"] == "alloy" and beta["input_audio_format"] == "pcm16" and "tools" not in beta
    assert beta["input_audio_transcription"] is None
    assert rt.message_item("beta", "assistant", "Hi")["item"]["content"] == [{"type": "text", "text": "Hi"}]
    assert rt.message_item("ga", "assistant", "Hi")["item"]["content"] == [{"type": "output_text", "text": "Hi"}]
    assert rt.truncate("i1", 1234.9) == {"type": "conversation.item.truncate", "item_id": "i1",
                                         "content_index": 0, "audio_end_ms": 1234}


# --- the tools ----------------------------------------------------------------------------
def test_current_time_answers_in_a_time_zone_and_refuses_a_bad_one():
    tools = ToolBox(["current_time"], None, clock=lambda: NOON)
    assert json.loads(tools.call("current_time", '{"timezone": "Asia/Shanghai"}')) == {
        "timezone": "Asia/Shanghai", "date": "2026-12-02", "time": "20:34", "weekday": "Wednesday"}
    assert "unknown time zone" in json.loads(tools.call("current_time", '{"timezone": "Mars/Olympus"}'))["error"]
    assert "JSON object" in json.loads(tools.call("current_time", "[1]"))["error"]
    assert "too long" in json.loads(tools.call("current_time", "{" + " " * 5000 + "}"))["error"]
    assert "no tool named" in json.loads(tools.call("rm_rf", "{}"))["error"]


def test_faq_lookup_finds_the_closest_question(tmp_path):
    faq = tmp_path / "faq.yaml"
    faq.write_text('- {question: "What are your opening hours?", answer: "Nine to five."}\n'
                   '- {question: "营业时间是几点？", answer: "九点到五点。"}\n'
                   '- {question: "Where is the shop?", answer: "On Main Street."}\n')
    character = Character(id="c", name="C", faq_file=faq)
    tools = ToolBox(["faq_lookup"], character)
    assert json.loads(tools.call("faq_lookup", '{"query": "when do you open, what hours"}'))["answer"] == "Nine to five."
    assert json.loads(tools.call("faq_lookup", '{"query": "几点营业"}'))["answer"] == "九点到五点。"
    assert json.loads(tools.call("faq_lookup", '{"query": "quantum physics"}'))["answer"] is None
    with pytest.raises(ValueError, match="FAQ file not found"):
        Character(id="c", name="C", faq_file=tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="has no faq_file"):
        ToolBox(["faq_lookup"], Character(id="c", name="C"))


def test_realtime_config_names_the_bad_field(tmp_path):
    with pytest.raises(ConfigError, match="conversation.realtime.tools.*unknown tools.*'weather'"):
        load_profile("configs/cpu.yaml", {"conversation": {"backend": "realtime", "realtime": {"tools": ["weather"]}}})
    with pytest.raises(ConfigError, match="conversation.realtime.url.*not a WebSocket URL"):
        load_profile("configs/cpu.yaml", {"conversation": {"realtime": {"url": "https://api.openai.com"}}})
    with pytest.raises(ConfigError, match="conversation.backend"):
        load_profile("configs/cpu.yaml", {"conversation": {"backend": "speech2speech"}})


# --- a session against the fake server ----------------------------------------------------
@pytest.fixture
def fake():
    server = FakeRealtime(reply=LONG_REPLY).start()
    yield server
    server.stop()


class Realtime(Session):
    """The session core with a RealtimeConversation in front of it."""

    def __init__(self, fake: FakeRealtime, tools=(), **settings) -> None:
        super().__init__()
        self.conversation.character = Character(id="ava", name="Ava", system_prompt="You are Ava.",
                                                apology_llm="Sorry, I lost my train of thought.")
        self.settings = RealtimeSettings(url=fake.ws_url, model="fake-realtime", api_key_env=None,
                                         tools=list(tools), **settings)
        self.realtime = RealtimeConversation(
            self.core, self.events.append, self.conversation, self.settings, voice="marin",
            tools=ToolBox(list(tools), None, clock=lambda: NOON), api_key="sk-test-key")

    async def start(self) -> None:
        self.realtime.start()
        await until(lambda: self.realtime.connected, "the connection")

    def of(self, kind: str) -> list:
        return [e for e in self.events if e.type == kind]

    def words(self, turn_id: str) -> str:
        return "".join(e.text for e in self.of("assistant_text") if e.turn_id == turn_id)

    async def speak(self, seconds_of_silence: float = 1.0) -> None:
        """The user says something (a buzz the fake's VAD hears), then is quiet."""
        voice, _ = speech("one two three", 16000)
        audio = to_float32(np.concatenate([voice, np.zeros(int(16000 * seconds_of_silence), np.int16)]))
        for start in range(0, len(audio), 320):
            await self.realtime.hear(audio[start:start + 320])


async def until(condition, what: str = "") -> None:
    async def wait():
        while not condition():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(wait(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or condition}") from None


async def test_greeting_configures_the_server_and_speaks_its_audio(fake):
    s = Realtime(fake, tools=["current_time"])
    await s.start()
    await s.realtime.greet("Hello, I am Ava.")
    await until(lambda: s.core.speaking, "the greeting's turn")
    [conn] = fake.connections
    assert conn.query == {"model": "fake-realtime"} and conn.headers["Authorization"] == "Bearer sk-test-key"
    [update] = fake.of_type("session.update")
    assert update["session"]["instructions"] == "You are Ava." and update["session"]["audio"]["output"]["voice"] == "marin"
    assert [t["name"] for t in update["session"]["tools"]] == ["current_time"]
    await s.play_out()
    [end] = s.turn_ends()
    assert end.interrupted is False and s.words(end.turn_id).strip() == "Hello, I am Ava."
    assert s.screen._index > 20  # every frame of the greeting's audio was shown
    assert "realtime_first_audio" in s.of("latency")[0].marks
    await s.realtime.close()


async def test_barge_in_truncates_the_reply_to_what_was_shown(fake):
    s = Realtime(fake)
    await s.start()
    await s.realtime.greet(LONG_REPLY)
    await until(lambda: s.core.speaking and s.clock.queued() > 100, "the reply's audio")
    await s.screen.show(30)  # the client has seen 1.2 s of the reply
    await s.speak()
    await until(lambda: fake.of_type("conversation.item.truncate"), "the truncate")
    [truncate] = fake.of_type("conversation.item.truncate")
    shown = 30 - 1  # the first frame shown was the idle one before the reply was queued
    assert truncate["audio_end_ms"] == pytest.approx(shown * 40, abs=40)
    [cut] = s.turn_ends()
    assert "barge_in" in s.types() and cut.interrupted is True
    assert all(unit.turn_id != cut.turn_id for unit in s.clock._speech)  # flushed: no more of it is heard
    # The server answers the utterance; that reply plays.
    await until(lambda: len(s.turn_ends()) == 1 and s.core.speaking, "the answer")
    assert [e.text for e in s.of("user_transcript")] == ["Hello?"]
    await s.realtime.close()


async def test_a_tool_call_round_trips_and_the_answer_is_spoken(fake):
    fake.transcripts.append("What time is it?")
    s = Realtime(fake, tools=["current_time"])
    await s.start()
    await s.speak()
    await until(lambda: s.core.speaking, "the answer")
    [output] = [e for e in fake.of_type("conversation.item.create") if e["item"]["type"] == "function_call_output"]
    assert json.loads(output["item"]["output"])["time"] == "12:34"
    await s.play_out()
    [end] = s.turn_ends()
    assert s.words(end.turn_id).strip() == "It is 12:34 in UTC."
    assert [(e.turn_id, e.text) for e in s.of("user_transcript")] == [(end.turn_id, "What time is it?")]
    assert s.conversation.prefix()[1:] == [{"role": "user", "content": "What time is it?"},
                                           {"role": "assistant", "content": "It is 12:34 in UTC."}]
    await s.realtime.close()


@pytest.mark.parametrize("mode, message", [("close", "closed the connection"), ("error", "The server had an error.")])
async def test_a_remote_failure_mid_reply_apologises_and_the_next_turn_reconnects(fake, mode, message):
    s = Realtime(fake)
    await s.start()
    await s.realtime.ask("Tell me a story.")
    await until(lambda: s.core.speaking, "the first answer")
    await s.play_out()  # history: one exchange
    fake.mode = mode
    fake.transcripts.append("And then?")
    await s.speak()
    await until(lambda: s.of("error"), "the error event")
    [error] = s.of("error")
    assert error.stage == "realtime" and message in error.message
    await until(lambda: s.stages.tts.called("stream"), "the apology")
    assert s.stages.tts.called("stream")[-1][0] == "Sorry, I lost my train of thought."
    assert s.stages.tts.called("stream")[-1][3] is True  # in the fallback voice
    await s.play_out()
    fake.mode = "ok"
    fake.transcripts.append("Hello again.")
    await s.speak()  # the next turn reconnects, with the history replayed
    await until(lambda: len(fake.connections) == 2 and s.core.speaking, "the reconnected answer")
    replayed = [e["item"] for e in fake.of_type("conversation.item.create")[1:]]
    assert [(i["role"], i["content"][0]["text"]) for i in replayed] == [("user", "Tell me a story."),
                                                                        ("assistant", LONG_REPLY)]
    await s.realtime.close()


async def test_a_stalled_reply_is_given_up_with_an_error_and_an_apology(fake):
    s = Realtime(fake, reply_timeout_s=0.3)
    await s.start()
    fake.mode = "hang"
    await s.speak()
    await until(lambda: s.of("error"), "the error event")
    assert "no reply audio within 0.3 s" in s.of("error")[0].message
    await until(lambda: s.stages.tts.called("stream"), "the apology")
    await s.realtime.close()


async def test_an_unreachable_server_is_reported_once_and_each_request_gets_an_apology():
    s = Realtime(FakeRealtime(), connect_timeout_s=2)  # never started: its port is closed
    s.settings = s.realtime._settings = RealtimeSettings(url="ws://127.0.0.1:9/v1/realtime", api_key_env=None,
                                                         retry_after_s=60)
    for n, question in enumerate(["Hello?", "Anyone there?"], 1):
        await s.realtime.ask(question)
        await until(lambda: len(s.stages.tts.called("stream")) == n, "the apology")
        await s.play_out()
    errors = s.of("error")
    assert len(errors) == 1 and "cannot reach ws://127.0.0.1:9/v1/realtime" in errors[0].message
    assert [args[0] for args in s.stages.tts.called("stream")] == ["Sorry, I lost my train of thought."] * 2
    assert [e.interrupted for e in s.turn_ends()] == [False, False]


async def test_the_beta_dialect_is_spoken_too():
    fake = FakeRealtime(dialect="beta").start()
    try:
        s = Realtime(fake, protocol="beta")
        await s.realtime.ask("Hi")
        await until(lambda: s.core.speaking, "the answer")
        assert fake.connections[0].headers["OpenAI-Beta"] == "realtime=v1"
        assert fake.of_type("session.update")[0]["session"]["voice"] == "marin"
        await s.play_out()
        assert s.words(s.turn_ends()[0].turn_id).strip() == fake.reply
        await s.realtime.close()
    finally:
        fake.stop()
