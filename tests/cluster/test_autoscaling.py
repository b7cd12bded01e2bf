"""Scale-out on Ray's fake multi-node autoscaling cluster (serve_app/local_cluster.py): the
head holds one session slot; a second session makes the autoscaler start a worker node, its
actor runs there and its media and speech reach the client through the head's proxy; once the
sessions end the idle node is removed. When a session's node is lost, its client reconnects
and the session goes on, with its history (from Redis), on a node the autoscaler starts.

Runs in a pytest process of its own, after the others (scripts/test.sh): starting this cluster
stops every Ray process of the machine.
"""
from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
import yaml

from actors.store import open_store
from serve_app.client import AvatarSession
from serve_app.config import PROJECT_ROOT, StoreSettings
from serve_app.events import CHANNEL_LOST_S
from serve_app.local_cluster import alive_nodes, session_node, until
from tests.fakes.conversation_servers import FakeChat
from tests.integration.support import ask_to_the_end, assert_still_streams_and_speaks

pytestmark = pytest.mark.cluster

HEAD = {"CPU": 2, "session_slots": 1, "models": 10}  # model replicas only here
# Two worker nodes at most: one that is lost, and the one started in its place.
WORKERS = {"sessions": {"resources": {"CPU": 2, "session_slots": 2}, "min_workers": 0, "max_workers": 2}}
IDLE_TIMEOUT_S = 10
REPLY = "Nice to meet you, Zed."


@pytest.fixture(scope="module")
def chat():
    server = FakeChat(REPLY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_url, chat):
    from ray import serve

    from serve_app.local_cluster import FakeAutoscalingCluster, deploy_config, free_port

    cluster = FakeAutoscalingCluster(HEAD, WORKERS, idle_timeout_s=IDLE_TIMEOUT_S)
    cluster.start(env={"DH_REDIS_URL": redis_url})  # every node reaches the tests' Redis
    cluster.connect()
    config = {"proxy_location": "HeadOnly",  # the ingress on the head reaches every node's sessions
              "applications": [{"name": "digital_human", "route_prefix": "/", "import_path": "serve_app.app:build_app",
                                "args": {"profile": str(PROJECT_ROOT / "tests/fixtures/cluster.yaml")}}]}
    path = tmp_path_factory.mktemp("cluster") / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    overrides = {"store": {"backend": "redis", "url_env": "DH_REDIS_URL"},
                 "llm": {"options": {"base_url": chat.url + "/v1", "model": "fake"}}}
    deploy_config(path, port, timeout_s=240, overrides=overrides)
    yield {"url": f"http://127.0.0.1:{port}", "cluster": cluster}
    serve.shutdown()
    cluster.shutdown()


async def test_sessions_beyond_the_heads_slots_start_a_node_and_it_goes_when_they_end(cluster):
    import ray

    url = cluster["url"]
    head = ray.get_runtime_context().get_node_id()  # this driver runs on the head
    assert alive_nodes() == [head]
    first = await AvatarSession(url).start()
    second = None
    try:
        await first.interrupt()
        assert await session_node(first.session_id) == head
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            capacity = (await http.get("/api/health")).json()["capacity"]
        assert capacity["slot_resource"] == "session_slots"
        assert (capacity["slots"], capacity["slots_free"], capacity["may_add"]) == (1, 0, 4)

        # No slot left: the request waits while the autoscaler starts a worker node.
        second = await AvatarSession(url, request_timeout=180).start()
        await second.interrupt()
        worker = await session_node(second.session_id)
        assert worker != head and worker in alive_nodes()
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            capacity = (await http.get("/api/health")).json()["capacity"]
        assert (capacity["slots"], capacity["slots_free"], capacity["may_add"]) == (3, 1, 2)
        # Its media and its speech come from the worker node, through the head's proxy.
        await assert_still_streams_and_speaks(second, "Hello from the new node.")
        await assert_still_streams_and_speaks(first, "And hello from the head.")
    finally:
        for session in (first, second):
            if session is not None:
                await session.close()
    # The worker is idle once its session has gone: the autoscaler removes it.
    await until(lambda: alive_nodes() == [head], timeout=IDLE_TIMEOUT_S + 120)


async def test_a_session_whose_node_is_lost_goes_on_with_its_history_on_a_new_node(cluster, chat):
    import ray

    url = cluster["url"]
    head = ray.get_runtime_context().get_node_id()
    await until(lambda: alive_nodes() == [head], timeout=IDLE_TIMEOUT_S + 120)  # after the test before
    store = open_store(StoreSettings(backend="redis", url_env="DH_TEST_REDIS_URL"))
    first = await AvatarSession(url).start()  # holds the head's slot
    second = None
    try:
        await first.interrupt()
        second = await AvatarSession(url, request_timeout=240).start()
        await second.interrupt()
        lost = await session_node(second.session_id)
        assert lost != head
        await ask_to_the_end(second, "My name is Zed.")
        record = await until(lambda: _with_reply(store, second.session_id), timeout=30)
        assert record.token_hash == hashlib.sha256(second.token.encode()).hexdigest()

        cluster["cluster"].kill_node(lost)
        await until(lambda: second.lost, timeout=CHANNEL_LOST_S + 10)  # its pings went unanswered
        # Reconnecting with the token: a new actor, on a node the autoscaler starts for it
        # (the head's one slot is taken), with the history from the store.
        ready = await second.reconnect(timeout=240)
        assert ready["resumed"] is True
        assert await session_node(second.session_id) not in (head, lost)
        await ask_to_the_end(second, "What is my name?")
        prompt = chat.requests[-1]["messages"]
        assert {"role": "user", "content": "My name is Zed."} in prompt
        assert {"role": "assistant", "content": REPLY} in prompt
        await assert_still_streams_and_speaks(second, "Back on a new node.")
        await assert_still_streams_and_speaks(first, "The head never stopped.")  # untouched by the loss
    finally:
        for session in (first, second):
            if session is not None:
                await session.close()
        await store.close()
    await until(lambda: alive_nodes() == [head], timeout=IDLE_TIMEOUT_S + 120)


async def _with_reply(store, session_id: str):
    record = await store.get(session_id)
    return record if record and any(m["content"] == REPLY for m in record.history) else None


LONG = ("This answer goes on for a while, sentence after sentence, so that the lip-sync replicas "
        "have chunks to render. It says a little more. And then a little more again.")


def running_replicas(deployment: str) -> int:
    from ray import serve

    return serve.status().applications["digital_human"].deployments[deployment].replica_states.get("RUNNING", 0)


async def test_lipsync_replicas_follow_their_deadline_use_up_and_back_down(cluster):
    """tests/fixtures/cluster.yaml: LipSync on DeadlinePolicy, 1..2 replicas, a target use any
    talking exceeds; idle sessions render nothing remotely (their use is 0)."""
    await until(lambda: running_replicas("LipSync") == 1, timeout=120)  # after the test before
    session = await AvatarSession(cluster["url"]).start()

    async def talk() -> None:
        while True:
            turn_id = await session.say(LONG)
            await session.wait_event(lambda e: e["type"] == "turn_end" and e["turn_id"] == turn_id, timeout=60)

    talking = asyncio.ensure_future(talk())
    try:
        await until(lambda: running_replicas("LipSync") == 2, timeout=120)
    finally:
        talking.cancel()
        await asyncio.gather(talking, return_exceptions=True)
    try:
        await session.interrupt()
        frames = len(session.received.video)
        await session.wait_until(lambda r: len(r.video) >= frames + 25)  # still streaming, idle
        await until(lambda: running_replicas("LipSync") == 1, timeout=120)
    finally:
        await session.close()
