"""Who may create sessions, how many, how fast, and for how long (tests/fixtures/strict.yaml:
a creation key, 2 sessions per client address, 4 creations a minute, a 20 s lifetime, 1 s
WebSocket heartbeats and a 2 s resume window)."""
from __future__ import annotations

import asyncio
import contextlib
import os

import json

import pytest
import websockets

from serve_app.client import ApiError, AvatarSession, SocketSession

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def strict_app(app_url: str, name: str, overrides: dict | None = None):
    """tests/fixtures/strict.yaml (with `overrides`) deployed beside the main app at /`name`;
    in a thread: the loop keeps serving the peers of sessions already open."""
    from ray import serve

    from serve_app.app import build_app
    from serve_app.local_cluster import run_app

    app = build_app({"profile": "tests/fixtures/strict.yaml", "overrides": overrides or {}})
    await asyncio.to_thread(run_app, app, name, f"/{name}", timeout_s=120)
    try:
        yield f"{app_url}/{name}"
    finally:
        await asyncio.to_thread(serve.delete, name)


@pytest.fixture(scope="module")
async def strict_url(app_url):
    async with strict_app(app_url, "strict") as url:
        yield url


async def refused(url: str, key: str | None) -> ApiError:
    with pytest.raises(ApiError) as info:
        await AvatarSession(url, create_key=key).create()
    return info.value


async def test_a_session_is_warned_then_ended_at_its_lifetime(strict_url):
    session = await AvatarSession(strict_url, create_key=os.environ["DH_TEST_CREATE_KEY"]).start()
    ended = asyncio.Event()
    session.pc.on("connectionstatechange",
                  lambda: ended.set() if session.pc.connectionState in ("closed", "failed") else None)
    try:
        warning = await session.wait_event(lambda e: e["type"] == "session_expiring", timeout=30)
        assert 0 < warning["seconds_left"] <= 5 and "ends soon" in warning["message"]
        await asyncio.wait_for(ended.wait(), 45)  # the server closed the peer connection
        with pytest.raises(ApiError) as gone:
            await session.info()
        assert gone.value.status == 404
    finally:
        await session.close()


async def test_a_websocket_client_that_goes_silent_is_dropped_and_its_session_ends(strict_url):
    """No pong (nor any message) for two heartbeats: the socket is closed with 4408; no
    reconnect within resume_ttl_s: the session ends, well before its lifetime would."""
    session = SocketSession(strict_url, create_key=os.environ["DH_TEST_CREATE_KEY"])
    try:
        await session.create()
        async with websockets.connect(session.socket_url()) as silent:
            await silent.send(json.dumps({"type": "hello", "token": session.token, "face": "none"}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:  # reads everything (pings included), answers nothing
                    await asyncio.wait_for(silent.recv(), 10)
            assert closed.value.rcvd.code == 4408 and "heartbeat" in closed.value.rcvd.reason

        async def ended() -> int:
            while True:
                try:
                    await session.info()
                except ApiError as gone:
                    return gone.status
                await asyncio.sleep(0.2)  # polling the server, not timing the test

        assert await asyncio.wait_for(ended(), 10) == 404  # its 20 s lifetime is far off
    finally:
        await session.close()


async def test_creation_needs_the_key_then_quota_and_rate_apply(strict_url):
    key = os.environ["DH_TEST_CREATE_KEY"]
    for wrong in (None, "not-the-key"):
        error = await refused(strict_url, wrong)
        assert error.status == 403 and "creation key" in error.detail
    made = []
    try:
        for _ in range(2):
            session = AvatarSession(strict_url, create_key=key)
            await session.create()
            made.append(session)
        error = await refused(strict_url, key)  # a third at once from this address
        assert error.status == 429 and "already has 2" in error.detail
        assert int(error.headers["Retry-After"]) >= 1
        await made.pop().close()
        # 4 creations a minute (the tests above made two): within a few more, one is refused.
        for _ in range(3):
            try:
                extra = AvatarSession(strict_url, create_key=key)
                await extra.create()
                await extra.close()
            except ApiError as error:
                assert error.status == 429 and "too fast" in error.detail, error
                assert int(error.headers["Retry-After"]) >= 1
                break
        else:
            pytest.fail("no creation was refused for its rate")
    finally:
        for session in made:
            await session.close()


# A burst from one address: its creations in flight count against its quota, so requests
# sent together cannot all pass the check before any is counted.
QUOTA_ONLY = {"sessions": {"create_token_env": None, "creations_per_min_per_client": None}}


@pytest.fixture  # one test: deleted as soon as it is done, so three apps never run beside the main one
async def quota_url(app_url):
    async with strict_app(app_url, "quota", QUOTA_ONLY) as url:
        yield url


async def create_together(url: str, n: int) -> tuple[list[AvatarSession], list[ApiError]]:
    sessions = [AvatarSession(url) for _ in range(n)]
    results = await asyncio.gather(*(s.create() for s in sessions), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, ApiError):
            raise result
    made = [s for s, r in zip(sessions, results) if not isinstance(r, BaseException)]
    return made, [r for r in results if isinstance(r, ApiError)]


async def test_a_burst_from_one_address_gets_its_quota_and_no_more(quota_url):
    made, refusals = await create_together(quota_url, 5)  # 2 per address, 3 in all
    try:
        assert len(made) == 2, [r.detail for r in refusals]
        assert all(r.status == 429 and "already has 2" in r.detail for r in refusals), refusals
    finally:
        for session in made:
            await session.close()
    made, _ = await create_together(quota_url, 1)  # the places were given back
    await made[0].close()


# --- admission by measured capacity ---------------------------------------------------------
# strict.yaml with admission on and a CPU need no machine meets: the first session is let in
# (nothing admitted to protect yet), the next is refused for the measured CPU.
NEEDS_ALL_CPU = {"sessions": {
    "admission": {"enabled": True, "min_free_cores": 10_000, "poll_s": 0.2},
    "create_token_env": None, "max_sessions_per_client": None, "creations_per_min_per_client": None,
}}


@pytest.fixture(scope="module")
async def busy_url(app_url):
    async with strict_app(app_url, "busy", NEEDS_ALL_CPU) as url:
        yield url


async def test_sessions_beyond_the_measured_capacity_get_503_until_one_ends(busy_url, http):
    first = AvatarSession(busy_url)
    await first.create()
    try:
        async def verdict() -> dict:
            while True:
                admission = (await http.get(f"{busy_url}/api/health")).json()["admission"]
                if not admission["accepting"]:
                    return admission
                await asyncio.sleep(0.2)  # polling the server, not timing the test

        admission = await asyncio.wait_for(verdict(), 20)
        assert "CPU cores free" in admission["reason"] and admission["free_cores"] is not None
        error = await refused(busy_url, None)
        assert error.status == 503 and "at capacity" in error.detail and "CPU cores free" in error.detail
        assert int(error.headers["Retry-After"]) >= 1
    finally:
        await first.close()
    again = AvatarSession(busy_url)
    await again.create()  # none admitted: the next one is let in
    await again.close()


async def test_a_burst_of_creations_gets_the_measured_capacity_and_no_more(busy_url):
    """The first is let in (nothing to protect yet); each other request sees it pending, so
    the CPU rule refuses it even though no measurement shows it yet."""
    made, refusals = await create_together(busy_url, 4)
    try:
        assert len(made) == 1, [r.detail for r in refusals]
        assert all(r.status == 503 and "CPU cores free" in r.detail for r in refusals), refusals
    finally:
        for session in made:
            await session.close()


async def test_a_session_with_no_room_for_its_actor_gets_503_and_leaves_nothing(app_url):
    """No node can place the actor (it asks for more CPUs than the cluster has): the request
    waits start_timeout_s, then 503 with Retry-After, and the pending actor is gone."""
    import ray

    from serve_app.config import SESSION_NAMESPACE

    overrides = {"sessions": {"warm_pool": 0, "actor_num_cpus": 64, "start_timeout_s": 2, "retry_after_s": 7,
                              "create_token_env": None, "max_sessions_per_client": None,
                              "creations_per_min_per_client": None}}
    async with strict_app(app_url, "roomless", overrides) as url:
        before = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == SESSION_NAMESPACE}
        error = await refused(url, None)
        assert error.status == 503 and error.headers["Retry-After"] == "7"
        assert "no room for a new session within 2 s" in error.detail
        after = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == SESSION_NAMESPACE}
        assert after <= before  # the actor that never started was killed
