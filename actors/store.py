"""The session store: each session's conversation, written through so it outlives the actor.

A session actor writes its record (character, avatar, voice, history, token hash, created)
whenever one of them changes. While the actor lives the record expires with the session's
maximum lifetime; when the session ends its record is deleted; when the actor dies (its node
was lost) the session pool keeps the record `resume_ttl_s` longer, and a client that
reconnects with its token in that time gets a new actor with the same history.

Two backends, one Protocol: `EmbeddedStore` (an SQLite file, for one machine: every process
there opens the same file) and `RedisStore` (for a cluster). Only the token's hash is stored.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from serve_app.config import ConfigError, StoreSettings, private_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    token_hash: str
    character: str
    avatar: str
    voice: str | None
    history: list[dict[str, str]] = field(default_factory=list)
    created: float = 0.0  # Unix time
    client: str | None = None  # the creating client's address (per-client quotas)
    stream: bool = False  # a MuseTalk-style streaming session

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> SessionRecord:
        return cls(**json.loads(raw))


class SessionStore(Protocol):
    async def put(self, record: SessionRecord, ttl_s: float) -> None:
        """Write the whole record; it expires `ttl_s` from now."""

    async def get(self, session_id: str) -> SessionRecord | None:
        """The record, or None if there is none (never written, deleted or expired)."""

    async def expire(self, session_id: str, ttl_s: float) -> None:
        """Keep the record only `ttl_s` more (nothing if there is none)."""

    async def delete(self, session_id: str) -> None: ...

    async def check(self) -> None:
        """Raise ConfigError, saying what to fix, if the store cannot be used."""

    async def close(self) -> None: ...


def open_store(settings: StoreSettings) -> SessionStore:
    if settings.backend == "redis":
        url = os.environ.get(settings.url_env)
        if not url:
            raise ConfigError(f"store.backend is redis but the environment variable {settings.url_env} "
                              "(store.url_env) is not set; set it to redis://host:port/db")
        return RedisStore(url, settings.key_prefix)
    return EmbeddedStore(settings.path)


class EmbeddedStore:
    """One SQLite file shared by the processes of one machine (WAL: readers never wait for
    the writer). Each call opens its own connection in a worker thread, so no session's event
    loop waits on the disk and no connection crosses threads."""

    _SCHEMA = "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record TEXT NOT NULL, expires REAL NOT NULL)"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        private_dir(self.path.parent)  # conversations: this user's alone
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)  # autocommit
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(self._SCHEMA)
        return db

    async def _run(self, sql: str, *args: Any) -> list[tuple]:
        def run() -> list[tuple]:
            db = self._connect()
            try:
                db.execute("DELETE FROM sessions WHERE expires <= ?", (time.time(),))
                return db.execute(sql, args).fetchall()
            finally:
                db.close()

        return await asyncio.to_thread(run)

    async def put(self, record: SessionRecord, ttl_s: float) -> None:
        await self._run("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)",
                        record.session_id, record.to_json(), time.time() + ttl_s)

    async def get(self, session_id: str) -> SessionRecord | None:
        rows = await self._run("SELECT record FROM sessions WHERE id = ?", session_id)
        return SessionRecord.from_json(rows[0][0]) if rows else None

    async def expire(self, session_id: str, ttl_s: float) -> None:
        await self._run("UPDATE sessions SET expires = ? WHERE id = ?", time.time() + ttl_s, session_id)

    async def delete(self, session_id: str) -> None:
        await self._run("DELETE FROM sessions WHERE id = ?", session_id)

    async def check(self) -> None:
        try:
            await self._run("SELECT count(*) FROM sessions")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"the session store file {self.path} (store.path) cannot be used: {exc}") from None

    async def close(self) -> None:
        pass


class RedisStore:
    """A record is one JSON string under `<prefix><session id>` with Redis's own expiry."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as aioredis  # the `cluster` extra

        self._redis = aioredis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
        self._prefix = prefix

    def _key(self, session_id: str) -> str:
        return self._prefix + session_id

    async def put(self, record: SessionRecord, ttl_s: float) -> None:
        await self._redis.set(self._key(record.session_id), record.to_json(), px=max(1, int(ttl_s * 1000)))

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self._redis.get(self._key(session_id))
        return SessionRecord.from_json(raw) if raw is not None else None

    async def expire(self, session_id: str, ttl_s: float) -> None:
        await self._redis.pexpire(self._key(session_id), max(1, int(ttl_s * 1000)))

    async def delete(self, session_id: str) -> None:
        await self._redis.delete(self._key(session_id))

    async def check(self) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            # The URL may hold a password: name where it comes from, never the URL itself.
            raise ConfigError(f"the Redis session store (store.url_env) cannot be reached: "
                              f"{exc.__class__.__name__}") from None

    async def close(self) -> None:
        await self._redis.aclose()


class RecordWriter:
    """A session's write-through: the latest record is written in the background, one write
    at a time (a burst of changes becomes one write of the newest). A store that fails is
    logged, not raised: the session goes on, only its resume is at risk."""

    def __init__(self, store: SessionStore, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._latest: SessionRecord | None = None
        self._task: asyncio.Task | None = None
        self._failing = False

    def save(self, record: SessionRecord) -> None:
        self._latest = record
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._latest is not None:
            record, self._latest = self._latest, None
            try:
                await self._store.put(record, self._ttl_s)
                self._failing = False
            except Exception as exc:
                if not self._failing:  # once per outage, not per write
                    log.warning("session %s: the session store failed (%s); its conversation cannot "
                                "be resumed until it works again", record.session_id, exc.__class__.__name__)
                self._failing = True

    async def flush(self) -> None:
        if self._task is not None:
            await self._task
