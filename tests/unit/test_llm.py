"""LLM backends without Ray: llama.cpp with the bundled SmolLM2, and the network backends
against fake servers on loopback that speak the real wire protocols."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from contextlib import aclosing

import pytest
from aiohttp import web

from serve_app.engines.llm import LLMUnavailable, create_llm_engine
from serve_app.engines.llm.dify import DifyLLM
from serve_app.engines.llm.openai_compat import OpenAICompatLLM
from tests.unit.llm_support import CHAT, first_and_rest

KEY = "sk-test-0123456789abcdef"
RELEASE = web.AppKey("release", asyncio.Event)  # set at teardown: stalled handlers may end



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def serve():
    """``await serve(routes)`` runs an aiohttp app on a free loopback port and returns its
    base URL."""
    runners: list[web.AppRunner] = []
    release = asyncio.Event()

    async def start(routes: list[web.RouteDef]) -> str:
        app = web.Application()
        app[RELEASE] = release
        app.add_routes(routes)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        runners.append(runner)
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    yield start
    release.set()
    for runner in runners:
        await runner.cleanup()


async def sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def send(response: web.StreamResponse, payload: dict | str) -> None:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    await response.write(f"data: {data}\n\n".encode())


# --- OpenAI-compatible ----------------------------------------------------------------------


def completion_chunk(content: str | None, finish: str | None = None) -> dict:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@pytest.fixture
def openai_key(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", KEY)


async def test_openai_streams_deltas_in_order_with_the_key_from_env(serve, openai_key):
    seen: list[dict] = []
    pieces = ["The", " capital", " is", " Paris", "."]

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append({"auth": request.headers.get("Authorization"), "body": await request.json()})
        response = await sse(request)
        await send(response, {**completion_chunk(""), "choices": [
            {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}
        ]})
        for piece in pieces:
            await send(response, completion_chunk(piece))
        await send(response, completion_chunk(None, "stop"))
        await send(response, "[DONE]")
        return response

    url = await serve([web.post("/v1/chat/completions", chat)])
    llm = create_llm_engine(
        "openai", base_url=url, model="fake-model", api_key_env="TEST_LLM_KEY",
        extra_body={"enable_thinking": False},
    )
    deltas, _ = await first_and_rest(llm.stream(CHAT, max_tokens=42))
    assert deltas == pieces
    [request] = seen
    assert request["auth"] == f"Bearer {KEY}"
    body = request["body"]
    assert body["messages"] == CHAT
    assert body["model"] == "fake-model" and body["stream"] is True
    assert body["max_tokens"] == 42 and body["enable_thinking"] is False


async def test_openai_without_a_key_for_local_servers(serve, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def chat(request: web.Request) -> web.StreamResponse:
        response = await sse(request)
        await send(response, completion_chunk("ok"))
        await send(response, "[DONE]")
        return response

    url = await serve([web.post("/v1/chat/completions", chat)])
    llm = OpenAICompatLLM(base_url=url, model="qwen2.5:0.5b", api_key_env=None)
    assert [d async for d in llm.stream(CHAT)] == ["ok"]


def test_openai_missing_env_var_is_named(monkeypatch):
    monkeypatch.delenv("NO_SUCH_LLM_KEY", raising=False)
    with pytest.raises(LLMUnavailable, match="NO_SUCH_LLM_KEY"):
        OpenAICompatLLM(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="NO_SUCH_LLM_KEY")


async def test_openai_unreachable_fails_fast(openai_key):
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAICompatLLM(base_url=url, model="m", api_key_env="TEST_LLM_KEY")
    with pytest.raises(LLMUnavailable, match="cannot reach"):
        await first_and_rest(llm.stream(CHAT))


async def test_openai_stalled_server_times_out(serve, openai_key):
    async def chat(request: web.Request) -> web.StreamResponse:
        await request.app[RELEASE].wait()
        return web.Response()

    url = await serve([web.post("/v1/chat/completions", chat)])
    llm = OpenAICompatLLM(
        base_url=url, model="m", api_key_env="TEST_LLM_KEY", timeout_s=1.0, max_retries=0
    )
    started = time.perf_counter()
    with pytest.raises(LLMUnavailable, match="did not answer within 1.0 s"):
        await first_and_rest(llm.stream(CHAT))
    assert time.perf_counter() - started > 0.9  # it did wait for the timeout


async def test_openai_stall_mid_stream_times_out(serve, openai_key):
    async def chat(request: web.Request) -> web.StreamResponse:
        response = await sse(request)
        await send(response, completion_chunk("Hello"))
        await request.app[RELEASE].wait()
        return response

    url = await serve([web.post("/v1/chat/completions", chat)])
    llm = OpenAICompatLLM(
        base_url=url, model="m", api_key_env="TEST_LLM_KEY", timeout_s=1.0, max_retries=0
    )
    deltas = []
    with pytest.raises(LLMUnavailable, match="did not answer"):
        async for delta in llm.stream(CHAT):
            deltas.append(delta)
    assert deltas == ["Hello"]


async def test_openai_rejected_key_is_not_echoed(serve, openai_key):
    async def chat(request: web.Request) -> web.Response:
        error = {"message": f"Incorrect API key provided: {KEY}.", "code": "invalid_api_key"}
        return web.json_response({"error": error}, status=401)

    url = await serve([web.post("/v1/chat/completions", chat)])
    llm = OpenAICompatLLM(base_url=url, model="m", api_key_env="TEST_LLM_KEY")
    with pytest.raises(LLMUnavailable) as failure:
        await first_and_rest(llm.stream(CHAT))
    message = str(failure.value)
    assert "401" in message and "TEST_LLM_KEY" in message
    assert KEY not in message and KEY[:10] not in message


async def test_openai_server_error_is_reported(serve, openai_key):
    async def chat(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "model overloaded"}}, status=503)

    url = await serve([web.post("/v1/chat/completions", chat)])
    llm = OpenAICompatLLM(base_url=url, model="m", api_key_env="TEST_LLM_KEY", max_retries=0)
    with pytest.raises(LLMUnavailable, match="HTTP 503.*model overloaded"):
        await first_and_rest(llm.stream(CHAT))


async def test_openai_closing_the_stream_closes_the_connection(serve, openai_key):
    disconnected = asyncio.Event()

    async def chat(request: web.Request) -> web.StreamResponse:
        response = await sse(request)
        try:
            while True:  # an endless reply, paced like a fast model
                await send(response, completion_chunk("word "))
                await asyncio.sleep(0.01)
        except (ConnectionError, RuntimeError):
            disconnected.set()
        return response

    url = await serve([web.post("/v1/chat/completions", chat)])
    llm = OpenAICompatLLM(base_url=url, model="m", api_key_env="TEST_LLM_KEY")
    stream = llm.stream(CHAT)
    async with aclosing(stream):
        assert await anext(stream) == "word "
    await asyncio.wait_for(disconnected.wait(), 5)


# --- Dify -----------------------------------------------------------------------------------


class FakeDify:
    """POST /v1/chat-messages as Dify streams it; each conversation's answer names it."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.stopped: list[tuple[str, dict]] = []
        self.stop_seen = asyncio.Event()
        self.deleted: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat-messages", self.chat),
            web.post("/v1/chat-messages/{task_id}/stop", self.stop),
        ]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"code": "unauthorized", "message": "bad key"}, status=401)
        body = await request.json()
        self.requests.append(body)
        if body["conversation_id"] in self.deleted:
            error = {"code": "not_found", "message": "Conversation Not Exists."}
            return web.json_response(error, status=404)
        conversation = body["conversation_id"] or f"conv-{len(self.requests)}"
        task = f"task-{len(self.requests)}"
        common = {"task_id": task, "message_id": "m1", "conversation_id": conversation}
        response = await sse(request)
        if body["query"] == "fail":
            await send(response, {"event": "error", "task_id": task, "status": 400,
                                  "code": "completion_request_error", "message": "model broke"})
            return response
        if body["query"] == "endless":
            try:
                while True:
                    await send(response, {"event": "message", **common, "answer": "la "})
                    await asyncio.sleep(0.01)
            except (ConnectionError, RuntimeError):
                return response
        await send(response, {"event": "workflow_started", **common})
        for piece in ["**Hi**", " from ", conversation, "! 😀"]:
            await send(response, {"event": "message", **common, "answer": piece})
        await send(response, {"event": "message_end", **common, "metadata": {}})
        return response

    async def stop(self, request: web.Request) -> web.Response:
        self.stopped.append((request.match_info["task_id"], await request.json()))
        self.stop_seen.set()
        return web.json_response({"result": "success"})


@pytest.fixture
async def dify(serve, monkeypatch):
    monkeypatch.setenv("TEST_DIFY_KEY", KEY)
    fake = FakeDify()
    url = await serve(fake.routes())
    return fake, create_llm_engine("dify", base_url=url, api_key_env="TEST_DIFY_KEY", user="u1")


async def test_dify_streams_answer_deltas(dify):
    fake, llm = dify
    deltas, _ = await first_and_rest(llm.stream(CHAT))
    assert deltas == ["**Hi**", " from ", "conv-1", "! 😀"]
    [body] = fake.requests
    assert body["query"] == CHAT[-1]["content"]
    assert body["response_mode"] == "streaming"
    assert body["conversation_id"] == "" and body["user"] == "u1"


async def test_dify_continues_the_conversation_of_the_history(dify):
    fake, llm = dify
    first = "".join([d async for d in llm.stream(CHAT)])
    # the caller records the reply as spoken (markdown and emoji stripped)
    spoken = "Hi from conv-1!"
    assert first != spoken
    history = CHAT + [{"role": "assistant", "content": spoken}]
    history.append({"role": "user", "content": "And Spain?"})
    second = "".join([d async for d in llm.stream(history)])
    assert fake.requests[1]["conversation_id"] == "conv-1"
    assert fake.requests[1]["query"] == "And Spain?"
    assert "conv-1" in second
    # A third turn whose history dropped the first turn still continues it.
    third = history[:1] + history[3:] + [
        {"role": "assistant", "content": "…"},  # interrupted before anything was said
        {"role": "user", "content": "Sorry, go on."},
    ]
    await first_and_rest(llm.stream(third))
    assert fake.requests[2]["conversation_id"] == "conv-1"


async def test_dify_keeps_sessions_with_the_same_words_apart(dify):
    fake, llm = dify
    hello = [{"role": "user", "content": "Hello"}]
    replies = ["".join([d async for d in llm.stream(hello)]) for _ in range(2)]
    assert [r["conversation_id"] for r in fake.requests] == ["", ""]
    for reply, conversation in zip(reversed(replies), ["conv-2", "conv-1"]):
        history = hello + [{"role": "assistant", "content": reply},
                           {"role": "user", "content": "Again"}]
        await first_and_rest(llm.stream(history))
        assert fake.requests[-1]["conversation_id"] == conversation
    # an unknown history starts a new conversation rather than guessing
    stranger = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
                {"role": "user", "content": "Again"}]
    await first_and_rest(llm.stream(stranger))
    assert fake.requests[-1]["conversation_id"] == ""


async def test_dify_conversations_never_cross_sessions(dify):
    fake, llm = dify
    hello = [{"role": "user", "content": "Hello"}]
    reply = "".join([d async for d in llm.stream(hello, session="alice")])
    assert fake.requests[0]["user"] == "u1-alice"
    follow_up = hello + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Again"}]
    # Bob's history is word for word Alice's, and hers is the only conversation that matches:
    # he still gets one of his own, as a user of his own.
    await first_and_rest(llm.stream(follow_up, session="bob"))
    assert fake.requests[-1]["conversation_id"] == "" and fake.requests[-1]["user"] == "u1-bob"
    await first_and_rest(llm.stream(follow_up, session="alice"))
    assert fake.requests[-1]["conversation_id"] == "conv-1" and fake.requests[-1]["user"] == "u1-alice"


async def test_dify_conversation_gone_on_the_server_starts_afresh(dify):
    fake, llm = dify
    reply = "".join([d async for d in llm.stream(CHAT)])
    history = CHAT + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Hm?"}]
    fake.deleted.add("conv-1")
    with pytest.raises(LLMUnavailable, match="HTTP 404: Conversation Not Exists"):
        await first_and_rest(llm.stream(history))
    assert fake.requests[-1]["conversation_id"] == "conv-1"
    await first_and_rest(llm.stream(history))
    assert fake.requests[-1]["conversation_id"] == ""


async def test_dify_error_event_raises(dify):
    _, llm = dify
    with pytest.raises(LLMUnavailable, match="completion_request_error: model broke"):
        await first_and_rest(llm.stream([{"role": "user", "content": "fail"}]))


async def test_dify_closing_early_stops_the_task(dify):
    """The stop names the user the task was started for (one per session), or Dify refuses it
    and the interrupted reply goes on generating there."""
    fake, llm = dify
    stream = llm.stream([{"role": "user", "content": "endless"}], session="s9")
    async with aclosing(stream):
        assert await anext(stream) == "la "
    await asyncio.wait_for(fake.stop_seen.wait(), 5)
    assert fake.stopped == [("task-1", {"user": "u1-s9"})]


async def test_dify_rejected_key(serve, monkeypatch):
    monkeypatch.setenv("TEST_DIFY_KEY", "wrong-key")
    url = await serve(FakeDify().routes())
    llm = DifyLLM(base_url=url, api_key_env="TEST_DIFY_KEY")
    with pytest.raises(LLMUnavailable, match="HTTP 401") as failure:
        await first_and_rest(llm.stream(CHAT))
    assert "wrong-key" not in str(failure.value)


async def test_dify_unreachable_and_missing_key(monkeypatch):
    monkeypatch.delenv("NO_SUCH_DIFY_KEY", raising=False)
    with pytest.raises(LLMUnavailable, match="NO_SUCH_DIFY_KEY"):
        DifyLLM(base_url="http://127.0.0.1:1/v1", api_key_env="NO_SUCH_DIFY_KEY")
    monkeypatch.setenv("TEST_DIFY_KEY", KEY)
    llm = DifyLLM(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key_env="TEST_DIFY_KEY")
    with pytest.raises(LLMUnavailable, match="cannot reach Dify"):
        await first_and_rest(llm.stream(CHAT))


async def test_dify_stalled_server_times_out(serve, monkeypatch):
    monkeypatch.setenv("TEST_DIFY_KEY", KEY)

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.app[RELEASE].wait()
        return web.Response()

    url = await serve([web.post("/v1/chat-messages", chat)])
    llm = DifyLLM(base_url=url, api_key_env="TEST_DIFY_KEY", timeout_s=1.0)
    with pytest.raises(LLMUnavailable, match="did not answer within 1.0 s"):
        await first_and_rest(llm.stream(CHAT))


# --- registry -------------------------------------------------------------------------------


def test_unknown_engine_lists_the_known_ones():
    with pytest.raises(ValueError, match="dify.*llama_cpp.*openai"):
        create_llm_engine("gpt5")
