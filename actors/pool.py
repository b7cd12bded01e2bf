"""SessionPool: starts session actors ahead of time, hands them out, and cleans up after them.

A session actor is a separate process that takes about a second to start, so a few are kept
warm. Each actor is named `session:<id>` in the `digital_human` namespace, so any ingress
replica can reach it by id. The pool enforces the session cap, keeps only token hashes, and
awaits each active actor's `wait_closed()`: whatever ends a session (DELETE, the peer leaving,
a TTL), its actor is then killed and its stored record deleted, so no process or peer
connection outlives it.

No state lives only here. Session actors are detached: when this replica dies they go on
streaming, and the restarted pool finds them by name (`adopt`). Each actor writes its
conversation to the session store (actors/store.py); when an actor dies, its record is kept
`store.resume_ttl_s`, and `resume` starts a new actor with it for the client's token.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray

from actors.capacity import NodeCpu, SessionLoad, overload_reason
from actors.errors import CapacityError, InvalidChoice, RateLimited, SessionForbidden, SessionNotFound
from actors.metrics import sessions_gauge
from actors.rate_limit import TokenBucket
from actors.session import SessionActor, actor_name, token_hash
from actors.store import open_store
from actors.turn_controller import StageHandles
from serve_app.config import SESSION_NAMESPACE, Character, Profile

log = logging.getLogger(__name__)

RemoteSession = ray.remote(SessionActor)
CLOSE_TIMEOUT_S = 5.0
MAX_CLIENTS_TRACKED = 10_000  # creation-rate buckets kept (least recently used dropped)
ACTOR_CALL_TIMEOUT_S = 30.0  # activating a started session actor (~1 s when healthy)
STATS_TIMEOUT_S = 5.0  # asking a live session what it shows
LOAD_TIMEOUT_S = 2.0  # a session that cannot say its load this fast is overloaded itself
MAX_START_TRIES = 3  # session actors started for one session, when each dies starting
ADOPT_RETRY_S = 10.0  # a session actor that did not answer the takeover is asked again this often
_UNANSWERED = object()


@dataclass
class _Active:
    handle: Any
    token_hash: str
    client: str | None = None
    reaper: asyncio.Task | None = None
    created: float = 0.0  # time.monotonic()


class SessionPool:
    def __init__(self, profile: Profile, characters: dict[str, Character], stages: StageHandles,
                 owner: str = "") -> None:
        """`owner`: the Serve app's name; a restarted pool takes over only its own sessions."""
        self._profile = profile
        self._owner = owner
        self._settings = profile.sessions
        self._characters = characters
        self._stages = stages
        self._warm: list[tuple[str, Any]] = []
        self._starting = 0
        self._active: dict[str, _Active] = {}
        self._creating = 0  # creations in flight count against the cap too
        self._creating_for: Counter[str | None] = Counter()  # the same, by client address
        self._fill_task: asyncio.Task | None = None
        self._creation_rates: OrderedDict[str, TokenBucket] = OrderedDict()  # by client address
        self._monitor: asyncio.Task | None = None
        self._overload: str | None = None  # why sessions are refused now (admission)
        self._free_cores: float | None = None
        self._loads: dict[str, SessionLoad | None] = {}
        self._store = open_store(profile.store)
        self._resuming: dict[str, asyncio.Task] = {}  # by session id: one new actor per resume
        self._closing = False
        self._adopting: asyncio.Task | None = None
        self._describing: dict[str, asyncio.Future] = {}  # takeover calls not answered yet, by name

    async def start(self) -> None:
        """Check the store, take over the sessions a previous replica left running, fill up."""
        await self._store.check()
        await self._adopt()
        self.fill()

    # --- warm pool ---------------------------------------------------------------------
    def _spawn(self, session_id: str | None = None) -> tuple[str, Any]:
        session_id = session_id or uuid.uuid4().hex
        handle = RemoteSession.options(
            name=actor_name(session_id),
            namespace=SESSION_NAMESPACE,
            lifetime="detached",  # outlives this replica; killed when its session ends
            num_cpus=self._settings.actor_num_cpus,
            resources={slot: 1} if (slot := self._settings.slot_resource) else {},
            max_concurrency=64,
            max_restarts=0,
        ).remote(session_id, self._profile, self._stages, self._owner)
        return session_id, handle

    async def _start_one(self, session_id: str | None = None) -> tuple[str, Any]:
        """A started session actor, within `sessions.start_timeout_s`. One that dies while
        starting (placed on a node that was lost before the cluster noticed) is started
        again, up to MAX_START_TRIES."""
        self._starting += 1
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._settings.start_timeout_s
        try:
            for tries in range(1, MAX_START_TRIES + 1):
                session_id, handle = self._spawn(session_id)
                try:
                    await asyncio.wait_for(handle.ready.remote(), max(0.0, give_up_at - loop.time()))
                    return session_id, handle
                except BaseException as exc:
                    ray.kill(handle, no_restart=True)  # never leave a half-started actor behind
                    if isinstance(exc, TimeoutError):
                        raise CapacityError(
                            f"no room for a new session within {self._settings.start_timeout_s:g} s (the cluster "
                            "has no free capacity for its actor); retry later", self._settings.retry_after_s) from None
                    if not isinstance(exc, ray.exceptions.RayActorError) or tries == MAX_START_TRIES:
                        raise
                    log.warning("session actor %s died while starting (%s); starting another", session_id,
                                exc.__class__.__name__)
        finally:
            self._starting -= 1

    def fill(self) -> None:
        """Top the warm pool up in the background (never beyond what the cap can use), and
        keep the admission's measurements going."""
        if self._closing:
            return  # detached actors started now would outlive this replica
        loop = asyncio.get_running_loop()
        if self._fill_task is None or self._fill_task.done():
            self._fill_task = loop.create_task(self._fill())
        if self._settings.admission.enabled and (self._monitor is None or self._monitor.done()):
            self._monitor = loop.create_task(self._watch_load())

    async def _fill(self) -> None:
        while len(self._warm) < min(
            self._settings.warm_pool, self._settings.max_sessions - len(self._active)
        ):
            try:
                self._warm.append(await self._start_one())
            except Exception:
                log.exception("could not start a warm session actor")
                return
            self._report()

    # --- admission by measured capacity (actors/capacity.py) -----------------------------
    async def _watch_load(self) -> None:
        settings = self._settings.admission
        cpu = NodeCpu(settings.window_s)
        cores = len(os.sched_getaffinity(0))
        while True:
            # With session slots, sessions run on the nodes that hold them, not on this
            # replica's: the slots size those nodes, and this node's CPU says nothing of them
            # (never sampled, so free_cores stays None).
            if not self._settings.slot_resource:
                cpu.sample()
            active = list(self._active.items())
            loads = await asyncio.gather(*(self._load_of(a) for _, a in active))
            self._loads = {sid: load for (sid, _), load in zip(active, loads) if sid in self._active}
            self._free_cores = cpu.free_cores(cores)
            self._overload = self._overload_now()
            await asyncio.sleep(settings.poll_s)

    @staticmethod
    async def _load_of(active: _Active) -> SessionLoad | None:
        try:
            return await asyncio.wait_for(active.handle.load.remote(), LOAD_TIMEOUT_S)
        except Exception:  # ending, dead (the reaper removes it) or too busy to answer
            return None

    def admission(self) -> dict:
        """The cached verdict: whether a session would be admitted now, and why not."""
        return {"enabled": self._settings.admission.enabled, "accepting": self._overload is None,
                "reason": self._overload, "free_cores": self._free_cores,
                "missed_frames": sum(load.missed_frames for load in self._loads.values() if load)}

    async def capacity(self) -> dict:
        """Room for sessions on the cluster now: with `sessions.slot_resource`, the slots of
        the live nodes and how many are free, and with `sessions.max_slots` how many more the
        autoscaler may add (it adds nodes for sessions that wait); `waiting`: session actors
        waiting to be placed."""
        out: dict = {"max_sessions": self._settings.max_sessions, "waiting": self._starting}
        if slot := self._settings.slot_resource:
            total, free = await asyncio.to_thread(
                lambda: (ray.cluster_resources().get(slot, 0), ray.available_resources().get(slot, 0)))
            out.update(slot_resource=slot, slots=int(total), slots_free=int(free))
            if (most := self._settings.max_slots) is not None:
                out.update(max_slots=most, may_add=max(0, most - int(total)))
        return out

    def _report(self) -> None:
        sessions_gauge().set(len(self._active), tags={"state": "active"})
        sessions_gauge().set(len(self._warm), tags={"state": "warm"})

    # --- sessions ---------------------------------------------------------------------
    def count(self) -> int:
        return len(self._active)

    def warm_count(self) -> int:
        return len(self._warm)

    def _check_client(self, client: str | None) -> None:
        """Per client address: sessions at once (creations in flight included), and
        creations a minute (429 beyond)."""
        settings = self._settings
        if client is None:
            return
        if settings.max_sessions_per_client is not None:
            held = sum(1 for a in self._active.values() if a.client == client) + self._creating_for[client]
            if held >= settings.max_sessions_per_client:
                raise RateLimited(f"this address already has {held} session(s), the most allowed; "
                                  "end one first", settings.retry_after_s)
        if settings.creations_per_min_per_client is not None:
            bucket = self._creation_rates.pop(client, None) or TokenBucket(
                settings.creations_per_min_per_client / 60, max(1, int(settings.creations_per_min_per_client)))
            self._creation_rates[client] = bucket  # most recently used last
            while len(self._creation_rates) > MAX_CLIENTS_TRACKED:
                self._creation_rates.popitem(last=False)
            if wait := bucket.take():
                raise RateLimited("sessions are being created too fast from this address; retry later",
                                  max(1, round(wait)))

    def _overload_now(self) -> str | None:
        """The admission verdict for one more session, from the last measurements and the
        sessions admitted since (young or still being created), each counted as a talking
        session's CPU until the window shows it."""
        settings = self._settings.admission
        if not settings.enabled:
            return None
        now = time.monotonic()
        young = sum(1 for a in self._active.values() if now - a.created < settings.window_s)
        loads = {sid: self._loads[sid] for sid in self._active if sid in self._loads}
        free_cores = self._free_cores
        if free_cores is None and not self._settings.slot_resource:
            free_cores = len(os.sched_getaffinity(0))  # not measured yet (the first poll): at most all
        return overload_reason(settings, loads, free_cores, young + self._creating)

    @contextlib.contextmanager
    def _reserved(self, client: str | None) -> Iterator[None]:
        """Admit one more session, or raise, and hold its place while it is created. The
        checks and the reservation run with no await between them, so requests sent at once
        are counted one after another: none slips past the cap, the measured capacity or the
        client's quota. The place is given back when the creation fails."""
        self._check_client(client)
        if len(self._active) + self._creating >= self._settings.max_sessions:
            raise CapacityError(
                f"all {self._settings.max_sessions} sessions are in use; retry later",
                self._settings.retry_after_s,
            )
        if (reason := self._overload_now()) is not None:
            raise CapacityError(f"the server is at capacity ({reason}); retry later", self._settings.retry_after_s)
        self._creating += 1
        self._creating_for[client] += 1
        try:
            yield
        finally:
            self._creating -= 1
            self._creating_for[client] -= 1
            if not self._creating_for[client]:
                del self._creating_for[client]

    async def create(self, avatar: str | None, character: str | None, client: str | None = None,
                     stream: bool = False) -> dict:
        """`stream`: a MuseTalk-style streaming session (no greeting; its MJPEG stream and its
        stop need no token: the seed API has none, its session id is the capability)."""
        character_id = character or self._profile.default_character
        if character_id not in self._characters:
            raise InvalidChoice(
                f"unknown character {character_id!r}; available: {sorted(self._characters)}"
            )
        with self._reserved(client):
            session_id, handle = self._warm.pop() if self._warm else await self._start_one()
            token = secrets.token_urlsafe(32)
            try:
                info = await asyncio.wait_for(handle.activate.remote(
                    token_hash(token), avatar or self._profile.default_avatar, self._characters[character_id], stream,
                    client), ACTOR_CALL_TIMEOUT_S)
            except InvalidChoice:
                self._warm.append((session_id, handle))  # refused before any change: reuse it
                raise
            except BaseException as exc:
                ray.kill(handle, no_restart=True)  # activation failed half-way: nothing is left
                self.fill()
                if isinstance(exc, Exception):
                    log.warning("session actor activation failed: %r", exc)
                    raise CapacityError("could not start a session; retry later",
                                        self._settings.retry_after_s) from None
                raise
            self._track(session_id, _Active(handle, token_hash(token), client, created=time.monotonic()))
        self.fill()
        log.info("session %s created (%d active)", session_id, len(self._active))
        return {**info, "token": token}

    def _track(self, session_id: str, active: _Active) -> None:
        self._active[session_id] = active
        active.reaper = asyncio.get_running_loop().create_task(self._reap(session_id, active))
        self._report()

    async def resume(self, session_id: str, token: str | None) -> None:
        """A client reconnects to a session whose actor died: a new actor goes on from the
        stored record (history, avatar, voice, age). Nothing to do if the actor lives."""
        task = self._resuming.get(session_id)
        if task is None:  # two reconnects at once share one new actor
            task = self._resuming[session_id] = asyncio.get_running_loop().create_task(self._resume(session_id, token))
            task.add_done_callback(lambda _: self._resuming.pop(session_id, None))
        await asyncio.shield(task)

    async def _resume(self, session_id: str, token: str | None) -> None:
        active = self._active.get(session_id)
        if active is not None:
            if await self._alive(active):
                return
            await self._drop(session_id, active, lost=True)
        record = await self._store.get(session_id)
        if record is None:
            raise SessionNotFound(f"session {session_id} not found (it has ended)")
        if not token or not hmac.compare_digest(token_hash(token), record.token_hash):
            raise SessionForbidden()
        character = self._characters.get(record.character)
        if character is None:
            raise SessionNotFound(f"session {session_id} cannot be resumed: its character {record.character!r} "
                                  "is no longer configured")
        if len(self._active) + self._creating >= self._settings.max_sessions:
            raise CapacityError(f"all {self._settings.max_sessions} sessions are in use; retry later",
                                self._settings.retry_after_s)
        self._creating += 1
        try:
            _, handle = await self._start_one(session_id)
            try:
                await asyncio.wait_for(handle.activate.remote(
                    record.token_hash, record.avatar, character, record.stream, record.client, record),
                    ACTOR_CALL_TIMEOUT_S)
            except BaseException:
                ray.kill(handle, no_restart=True)
                raise
        finally:
            self._creating -= 1
        self._track(session_id, _Active(handle, record.token_hash, record.client, created=time.monotonic()))
        log.info("session %s resumed on a new actor (%d exchanges of history)", session_id, len(record.history) // 2)

    @staticmethod
    async def _alive(active: _Active) -> bool:
        try:
            await asyncio.wait_for(active.handle.describe.remote(), STATS_TIMEOUT_S)
            return True
        except Exception:
            return False

    async def _adopt(self) -> None:
        """After this replica restarted: the session actors the previous one left running
        (detached, found by name) are this pool's again."""
        named = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        names = [a["name"] for a in named if a["namespace"] == SESSION_NAMESPACE and a["name"].startswith("session:")]
        unanswered = await self._take_over(names)
        if self._active:
            log.info("took over %d live session(s)", len(self._active))
        if unanswered:
            self._adopting = asyncio.get_running_loop().create_task(self._adopt_later(unanswered))

    async def _take_over(self, names: list[str]) -> list[str]:
        """Track the live sessions of this app among `names`, kill its warm actors (fill()
        makes fresh ones). Returns the names that did not answer in time: a warm actor the
        last replica started that is not placed yet (waiting for a node), or one too busy."""
        async def describe(name: str) -> Any:
            try:
                handle = ray.get_actor(name, namespace=SESSION_NAMESPACE)
            except ValueError:
                self._describing.pop(name, None)
                return None  # it ended meanwhile
            # One call per actor, awaited again on each round: an actor that is never placed
            # would otherwise queue a new call every ADOPT_RETRY_S.
            call = self._describing.get(name)
            if call is None:
                call = self._describing[name] = asyncio.ensure_future(handle.describe.remote())
            done, _ = await asyncio.wait({call}, timeout=STATS_TIMEOUT_S)
            if not done:
                return _UNANSWERED
            del self._describing[name]
            if call.exception() is not None:
                return None  # it is dying
            return handle, call.result()

        unanswered = []
        for name, found in zip(names, await asyncio.gather(*(describe(n) for n in names))):
            if found is _UNANSWERED:
                unanswered.append(name)
                continue
            if found is None or found[1]["owner"] != self._owner:
                continue  # gone, or another app's session
            handle, state = found
            if not state["active"]:
                ray.kill(handle, no_restart=True)
                continue
            created = time.monotonic() - state["age_s"]  # its lifetime, on this process's clock
            self._track(name.removeprefix("session:"),
                        _Active(handle, state["token_hash"], state["client"], created=created))
        return unanswered

    async def _adopt_later(self, names: list[str]) -> None:
        """Ask the actors that did not answer again until each has, or is gone: none is left
        running (or, once placed, holding a session slot) with no pool that knows it."""
        while names and not self._closing:
            await asyncio.sleep(ADOPT_RETRY_S)
            names = await self._take_over(names)

    async def delete(self, session_id: str, token: str | None) -> None:
        active = self._active.get(session_id)
        if active is None:
            raise SessionNotFound(f"session {session_id} not found")
        if not token or not hmac.compare_digest(token_hash(token), active.token_hash):
            raise SessionForbidden()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(active.handle.close.remote("deleted"), CLOSE_TIMEOUT_S)
        await self._drop(session_id, active)

    async def _reap(self, session_id: str, active: _Active) -> None:
        """Waits for the session to end by itself (peer gone, TTL) and removes it; an actor
        that died instead leaves its record resumable."""
        try:
            reason = await active.handle.wait_closed.remote()
            lost = False
        except asyncio.CancelledError:
            return
        except Exception as exc:  # the actor died
            reason, lost = f"actor died: {exc.__class__.__name__}; resumable for store.resume_ttl_s", True
        log.info("session %s ended: %s", session_id, reason)
        await self._drop(session_id, active, lost)

    async def _drop(self, session_id: str, active: _Active, lost: bool = False) -> None:
        """`lost`: the actor died (or is being shut down with this replica), the session did
        not end: its record stays `store.resume_ttl_s` for the client to resume it."""
        if self._active.get(session_id) is not active:
            return
        del self._active[session_id]
        if active.reaper is not None and active.reaper is not asyncio.current_task():
            active.reaper.cancel()
        ray.kill(active.handle, no_restart=True)
        self._report()
        self.fill()
        try:
            if lost:
                await self._store.expire(session_id, self._profile.store.resume_ttl_s)
            else:
                await self._store.delete(session_id)
        except Exception as exc:
            log.warning("session %s: the session store failed (%s)", session_id, exc.__class__.__name__)

    async def sessions_using(self, avatar_id: str) -> int:
        """How many live sessions show `avatar_id` now (asked of each actor: only for the
        rare admin delete, never for health checks)."""
        async def avatar_of(active: _Active) -> str | None:
            try:
                return (await asyncio.wait_for(active.handle.stats.remote(), STATS_TIMEOUT_S))["avatar"]
            except Exception:
                return None  # ending, or dead: the reaper removes it

        avatars = await asyncio.gather(*(avatar_of(a) for a in list(self._active.values())))
        return sum(1 for a in avatars if a == avatar_id)

    async def shutdown(self) -> None:
        self._closing = True
        for task in (self._monitor, self._fill_task, self._adopting, *self._describing.values()):
            if task is not None:
                task.cancel()  # a warm actor being started is killed (_start_one)
        for session_id, active in list(self._active.items()):
            await self._drop(session_id, active, lost=True)  # a redeploy: clients may resume
        for _, handle in self._warm:
            ray.kill(handle, no_restart=True)
        self._warm.clear()
        await self._store.close()
