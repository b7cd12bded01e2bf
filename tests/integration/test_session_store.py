"""No single process holds a session (actors/store.py, actors/pool.py), on both store backends:
the embedded SQLite file and a real redis-server started by the tests.

- A live session writes its conversation through to the store.
- A session whose actor is killed resumes its history on a new actor when its client
  reconnects with the token (and only with the token).
- An ended session's record is deleted; a lost one expires after `store.resume_ttl_s`.
- Killing the SessionManager replica leaves live sessions streaming and speaking; the
  restarted replica takes them over, and new sessions can be created. Killing the ingress
  replica or Serve's proxy leaves them streaming too.
"""
from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
import ray

from actors.store import open_store
from serve_app.client import AvatarSession, SocketSession
from serve_app.config import StoreSettings
from serve_app.local_cluster import session_actor, until
from tests.fakes.conversation_servers import FakeChat
from tests.integration.support import ask_to_the_end, assert_still_streams_and_speaks

pytestmark = pytest.mark.integration

REPLY = "Nice to meet you, Zed."
RESUME_TTL_S = 10.0  # store.resume_ttl_s here: a lost session's record expires this soon (time to reconnect)


@pytest.fixture(scope="module", params=["embedded", "redis"])
async def store_app(request, app_url, tmp_path_factory):
    """tests/fixtures/strict.yaml (Piper, viseme) with its LLM on a fake chat server, no
    creation key or quotas, and the session store on `param`."""
    from ray import serve

    from serve_app.app import build_app
    from serve_app.local_cluster import run_app

    backend = request.param
    if backend == "redis":
        request.getfixturevalue("redis_url")
    store = StoreSettings(backend=backend, path=tmp_path_factory.mktemp("store") / "sessions.sqlite3",
                          url_env="DH_TEST_REDIS_URL", resume_ttl_s=RESUME_TTL_S)
    chat = FakeChat(REPLY).start()
    overrides = {
        "sessions": {"create_token_env": None, "max_sessions_per_client": None, "creations_per_min_per_client": None,
                     "max_lifetime_s": 3600, "max_sessions": 4, "resume_ttl_s": 30},
        "llm": {"options": {"base_url": chat.url + "/v1", "model": "fake", "api_key_env": None, "timeout_s": 10}},
        "store": {"backend": backend, "path": str(store.path), "url_env": store.url_env,
                  "resume_ttl_s": RESUME_TTL_S},
    }
    name = f"store_{backend}"
    # Deployed in a thread: the loop keeps serving the peers of sessions already open.
    await asyncio.to_thread(run_app, build_app({"profile": "tests/fixtures/strict.yaml", "overrides": overrides}),
                            name, f"/{name}", timeout_s=120)
    opened = open_store(store)
    yield {"url": f"{app_url}/{name}", "name": name, "store": opened, "chat": chat}
    await opened.close()
    await asyncio.to_thread(serve.delete, name)
    chat.stop()


async def test_a_killed_actor_resumes_its_history_on_a_new_actor(store_app):
    store, chat = store_app["store"], store_app["chat"]
    session = await SocketSession(store_app["url"]).start()
    try:
        await session.interrupt()  # the greeting
        await ask_to_the_end(session, "My name is Zed.")
        record = await until(lambda: _with_history(store, session.session_id, "My name is Zed."))
        assert record.token_hash == hashlib.sha256(session.token.encode()).hexdigest()
        assert (record.character, record.avatar) == ("ava", "default")
        assert record.voice == (await session.info())["voice"]
        assert record.history[-1] == {"role": "assistant", "content": REPLY}

        old = session_actor(session.session_id)
        await asyncio.to_thread(ray.kill, old, no_restart=True)  # as when its node is lost
        await session.wait_closed(30)

        # A stranger cannot resume it, and trying leaves no actor behind.
        intruder = SocketSession(store_app["url"])
        intruder.session_id = session.session_id
        assert await intruder.connect(token="not-the-token") is None
        assert intruder.close_code == 4403

        events_before = len(session.received.events)
        welcome = await session.connect()
        assert welcome is not None and welcome["resumed"] is True
        new = session_actor(session.session_id)
        assert new._actor_id != old._actor_id
        frames = len(session.jpegs)
        await session.wait_until(lambda s: len(s.jpegs) >= frames + 25)  # the new actor streams the face

        await ask_to_the_end(session, "What is my name?")
        prompt = chat.requests[-1]["messages"]
        assert {"role": "user", "content": "My name is Zed."} in prompt
        assert {"role": "assistant", "content": REPLY} in prompt
        assert (await session.info())["exchanges"] == 2
        spoken = [e for e in session.received.events[events_before:] if e["type"] == "turn_end"]
        assert len(spoken) == 1  # the question's turn only: the resumed session is not greeted again
    finally:
        await session.close()
    assert await until(lambda: _gone(store, session.session_id))  # ended: the record is deleted


@pytest.mark.parametrize("store_app", ["embedded"], indirect=True)
async def test_a_webrtc_client_whose_actor_died_reconnects_to_its_history(store_app):
    """The page's path (web/app.js reconnect; the browser test waits for its pings to go
    unanswered, longer than this app's resume TTL): the client offers again on the same
    session with its token and gets a new actor."""
    chat = store_app["chat"]
    session = await AvatarSession(store_app["url"]).start()
    try:
        await session.interrupt()  # the greeting
        await ask_to_the_end(session, "My name is Zed.")
        await until(lambda: _with_history(store_app["store"], session.session_id, REPLY))
        old = session_actor(session.session_id)
        await asyncio.to_thread(ray.kill, old, no_restart=True)
        ready = await session.reconnect()
        assert ready["resumed"] is True
        assert session_actor(session.session_id)._actor_id != old._actor_id
        frames = len(session.received.video)
        await session.wait_until(lambda r: len(r.video) >= frames + 25)
        await ask_to_the_end(session, "What is my name?")
        assert {"role": "user", "content": "My name is Zed."} in chat.requests[-1]["messages"]
        since = ready["received_at"]
        spoken = [e for e in session.received.events if e["type"] == "turn_end" and e["received_at"] >= since]
        assert len(spoken) == 1  # the question's turn only: the resumed session is not greeted again
    finally:
        await session.close()


async def _with_history(store, session_id: str, text: str):
    record = await store.get(session_id)
    return record if record and any(m["content"] == text for m in record.history) else None


async def _gone(store, session_id: str) -> bool:
    return await store.get(session_id) is None


async def test_a_lost_session_can_be_resumed_only_until_its_record_expires(store_app):
    store = store_app["store"]
    session = await SocketSession(store_app["url"]).start()
    try:
        assert await until(lambda: store.get(session.session_id))
        await asyncio.to_thread(ray.kill, session_actor(session.session_id), no_restart=True)
        await session.wait_closed(30)
        await until(lambda: _gone(store, session.session_id), timeout=RESUME_TTL_S + 30)
        assert await session.connect() is None
        assert session.close_code == 4404
        with pytest.raises(ValueError):
            session_actor(session.session_id)
    finally:
        await session.close(delete=False)


async def test_killing_the_session_manager_leaves_sessions_streaming(store_app):
    from tests.integration.test_faults import kill_replica

    url = store_app["url"]
    sessions = [await AvatarSession(url).start() for _ in range(2)]
    try:
        for session in sessions:
            await session.interrupt()
        await asyncio.to_thread(kill_replica, "SessionManager", store_app["name"])
        # While the replica restarts and after: both sessions stream and speak.
        await asyncio.gather(*(assert_still_streams_and_speaks(s, "Still here.") for s in sessions))

        async def created() -> AvatarSession | None:  # a new session, once the new replica serves
            try:
                return await AvatarSession(url).start()
            except Exception:
                return None

        third = await until(created, timeout=120, every=0.5)
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            health = (await http.get("/api/health")).json()
        assert health["sessions"] == 3  # the two it took over, and the new one
        await third.close()
        await sessions[0].delete()  # the new replica knows its token (ApiError if not)
        await asyncio.gather(*(assert_still_streams_and_speaks(s, "And still.") for s in sessions[1:]))
    finally:
        for session in sessions:
            await session.close()


def kill_proxies() -> None:
    """Serve's HTTP proxy actors (one per node); the controller starts new ones."""
    proxies = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("SERVE_PROXY_ACTOR")]
    assert proxies, "no Serve proxy found"
    for proxy in proxies:
        ray.kill(ray.get_actor(proxy["name"], namespace=proxy["namespace"]), no_restart=True)


@pytest.mark.parametrize("store_app", ["redis"], indirect=True)
@pytest.mark.parametrize("kill", ["ingress", "proxy"])
async def test_killing_the_ingress_or_the_proxy_leaves_sessions_streaming(store_app, kill):
    """WebRTC media flows between the session actor and the client, not through the ingress
    or Serve's proxy: while either restarts the face keeps coming, and the API answers again
    after."""
    from tests.integration.test_faults import kill_replica

    session = await AvatarSession(store_app["url"]).start()
    try:
        await session.interrupt()
        if kill == "ingress":
            await asyncio.to_thread(kill_replica, "Ingress", store_app["name"])
        else:
            await asyncio.to_thread(kill_proxies)
        frames = len(session.received.video)
        await session.wait_until(lambda r: len(r.video) >= frames + 50)  # two seconds of video meanwhile

        async def answered() -> bool:  # a new proxy, and a new Ingress replica behind it
            try:
                return (await session.info())["connection"] == "connected"
            except Exception:
                return False

        assert await until(answered, timeout=120, every=0.5)
        await assert_still_streams_and_speaks(session, f"The {kill} came back.")
    finally:
        await session.close()
