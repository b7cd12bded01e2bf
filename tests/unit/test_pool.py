"""The session pool's view of the cluster (actors/pool.py).

A restarted SessionManager's pool takes over what the last one left (`_adopt`): its app's
live sessions are tracked, its warm actors killed, other apps' actors left alone, and an
actor that does not answer in time (a warm one the last replica started that is still
waiting for a node) is asked again until it does, so none is left unowned. Admission measures
this node's CPU on one machine only: on a cluster (session slots) sessions run elsewhere.

Ray's actor directory is replaced by a dictionary of fake actors here; the same takeover on
a real cluster is tests/integration/test_session_store.py's SessionManager kill."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import ray

from actors import pool as pool_module
from actors.capacity import SessionLoad
from actors.pool import SessionPool
from serve_app.config import SESSION_NAMESPACE, load_profile
from serve_app.local_cluster import until

OWNER = "digital_human"


class FakeActor:
    """Answers `describe()` with `state`, or never while `placed` is False."""

    def __init__(self, state: dict, placed: bool = True) -> None:
        self.state, self.placed = state, placed
        self.described = 0  # describe() calls made
        self.describe = SimpleNamespace(remote=self._describe)
        self.wait_closed = SimpleNamespace(remote=lambda: asyncio.Event().wait())  # a session that goes on
        self.load = SimpleNamespace(remote=self._load)
        self.loads_asked = 0

    async def _load(self) -> SessionLoad:
        self.loads_asked += 1
        return SessionLoad(missed_frames=0, loop_lag_ms=1.0, rss_mb=300.0)  # on time

    async def _describe(self) -> dict:
        self.described += 1
        while not self.placed:
            await asyncio.sleep(0.01)
        return self.state


def state(owner: str = OWNER, active: bool = False) -> dict:
    return {"owner": owner, "active": active, "token_hash": "ab" * 32 if active else None, "client": "127.0.0.1",
            "age_s": 5.0 if active else 0.0, "node_id": "n1"}


@pytest.fixture
def cluster(monkeypatch):
    actors: dict[str, FakeActor] = {}
    killed: list[str] = []

    def get_actor(name: str, namespace: str):
        assert namespace == SESSION_NAMESPACE
        if name not in actors:
            raise ValueError(f"no actor {name}")
        return actors[name]

    def kill(handle, no_restart: bool = True):
        name = next(n for n, a in actors.items() if a is handle)
        killed.append(name)
        del actors[name]

    monkeypatch.setattr(ray.util, "list_named_actors", lambda all_namespaces=True: [
        {"name": name, "namespace": SESSION_NAMESPACE} for name in list(actors)] + [
        {"name": "SERVE_CONTROLLER_ACTOR", "namespace": "serve"}])
    monkeypatch.setattr(ray, "get_actor", get_actor)
    monkeypatch.setattr(ray, "kill", kill)
    monkeypatch.setattr(pool_module, "STATS_TIMEOUT_S", 0.2)
    monkeypatch.setattr(pool_module, "ADOPT_RETRY_S", 0.1)
    return SimpleNamespace(actors=actors, killed=killed)


@pytest.fixture
async def make_pool(tmp_path):
    made: list[SessionPool] = []

    def make(**sessions) -> SessionPool:
        profile = load_profile("configs/cpu.yaml", {
            "store": {"backend": "embedded", "path": str(tmp_path / "sessions.sqlite3")},
            "sessions": {"warm_pool": 0, "admission": {"enabled": False}} | sessions})
        made.append(SessionPool(profile, {}, stages=None, owner=OWNER))
        return made[-1]

    yield make
    for pool in made:
        pool._closing = True
        for task in (pool._adopting, pool._monitor, *(a.reaper for a in pool._active.values())):
            if task is not None:
                task.cancel()


@pytest.fixture
def pool(make_pool) -> SessionPool:
    return make_pool()


async def test_a_restarted_pool_takes_over_its_live_sessions_and_kills_its_warm_actors(cluster, pool):
    cluster.actors.update({
        "session:live": FakeActor(state(active=True)),
        "session:warm": FakeActor(state()),
        "session:theirs": FakeActor(state(owner="other_app", active=True)),
        "session:theirs-warm": FakeActor(state(owner="other_app")),
    })
    await pool.start()
    assert list(pool._active) == ["live"]
    assert pool._active["live"].token_hash == "ab" * 32
    assert cluster.killed == ["session:warm"]
    assert pool._adopting is None  # every actor answered


async def test_an_actor_that_did_not_answer_the_takeover_is_asked_again_until_it_does(cluster, pool):
    unplaced_warm = FakeActor(state(), placed=False)  # the last replica started it; no node yet
    busy_live = FakeActor(state(active=True), placed=False)
    cluster.actors.update({"session:unplaced": unplaced_warm, "session:busy": busy_live})
    await pool.start()
    assert pool._active == {} and cluster.killed == []
    takeovers = 0
    take_over = pool._take_over

    async def counted(names):
        nonlocal takeovers
        takeovers += 1
        return await take_over(names)

    pool._take_over = counted  # what _adopt_later calls each round
    await until(lambda: takeovers >= 3, timeout=10)
    assert (unplaced_warm.described, busy_live.described) == (1, 1)  # one call each, awaited again

    unplaced_warm.placed = busy_live.placed = True  # the node came; the busy one caught up
    await until(lambda: pool._adopting.done(), timeout=10)
    assert cluster.killed == ["session:unplaced"]  # not left holding a session slot
    assert list(pool._active) == ["busy"]


async def test_an_actor_that_ends_before_it_answers_is_not_asked_again(cluster, pool):
    cluster.actors["session:dying"] = FakeActor(state(), placed=False)
    await pool.start()
    del cluster.actors["session:dying"]  # ended meanwhile: get_actor now fails
    await until(lambda: pool._adopting.done(), timeout=10)
    assert cluster.killed == [] and pool._active == {}


@pytest.mark.parametrize("slot_resource", [None, "session_slots"])
async def test_the_cpu_rule_measures_this_node_only_without_session_slots(cluster, make_pool, slot_resource):
    live = cluster.actors["session:live"] = FakeActor(state(active=True))
    pool = make_pool(slot_resource=slot_resource,
                     admission={"enabled": True, "poll_s": 0.05, "min_free_cores": 1000})  # never this many
    await pool.start()
    # Asked a third time: the second round (two CPU samples: a measurement) has been judged.
    await until(lambda: live.loads_asked >= 3, timeout=10)
    admission = pool.admission()
    if slot_resource is None:  # one machine: sessions share this node's CPU
        assert not admission["accepting"] and "CPU cores free" in admission["reason"], admission
    else:  # a cluster: the session on time is all that is measured
        assert admission["accepting"] and admission["free_cores"] is None, admission


async def test_an_actor_that_dies_while_starting_is_started_again(cluster, pool, monkeypatch):
    """Placed on a node that was lost before the cluster noticed: a new actor, same session."""
    deaths = iter([True, True, False])  # the first two die, the third starts

    def spawn(session_id=None):
        handle = FakeActor(state())
        cluster.actors[f"session:{session_id}"] = handle

        async def ready():
            if next(deaths):
                raise ray.exceptions.ActorDiedError()
        handle.ready = SimpleNamespace(remote=ready)
        return session_id, handle

    monkeypatch.setattr(pool, "_spawn", spawn)
    session_id, handle = await pool._start_one("s1")
    assert session_id == "s1" and cluster.actors["session:s1"] is handle
    assert cluster.killed == ["session:s1", "session:s1"]  # each dead one cleaned up

    deaths = iter([True] * pool_module.MAX_START_TRIES)
    with pytest.raises(ray.exceptions.ActorDiedError):  # a node that keeps failing: an error, no loop
        await pool._start_one("s2")
