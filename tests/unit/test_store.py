"""The session store (actors/store.py) on both backends: an SQLite file, and a real
redis-server started by the tests (tests/conftest.py). The session-level behaviour (write-
through from a live session, resume on a new actor, deletion at the end) is in
tests/integration/test_session_store.py."""
from __future__ import annotations

import asyncio
import os

import pytest

from actors.conversation import Conversation
from actors.store import EmbeddedStore, RecordWriter, RedisStore, SessionRecord, open_store
from serve_app.config import Character, ConfigError, StoreSettings

RECORD = SessionRecord(session_id="a" * 32, token_hash="f" * 64, character="ava", avatar="default",
                       voice="joe", history=[{"role": "user", "content": "Ich heiße Zoë."},
                                             {"role": "assistant", "content": "Hallo Zoë!"}],
                       created=1_700_000_000.0, client="127.0.0.1")


@pytest.fixture(params=["embedded", "redis"])
async def store(request, tmp_path):
    if request.param == "embedded":
        store = EmbeddedStore(tmp_path / "store" / "sessions.sqlite3")
    else:
        store = RedisStore(request.getfixturevalue("redis_url"), f"test:{os.urandom(4).hex()}:")
    await store.check()
    yield store
    await store.close()


async def gone(store, session_id: str, timeout: float = 10) -> None:
    async def poll() -> None:
        while await store.get(session_id) is not None:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def test_a_record_round_trips_whole(store):
    assert await store.get(RECORD.session_id) is None
    await store.put(RECORD, ttl_s=60)
    assert await store.get(RECORD.session_id) == RECORD
    changed = SessionRecord(**{**RECORD.__dict__, "voice": "amy", "history": RECORD.history * 2})
    await store.put(changed, ttl_s=60)
    assert await store.get(RECORD.session_id) == changed


async def test_delete_and_expiry(store):
    await store.put(RECORD, ttl_s=60)
    await store.delete(RECORD.session_id)
    assert await store.get(RECORD.session_id) is None
    await store.put(RECORD, ttl_s=60)
    await store.expire(RECORD.session_id, 0.3)  # what the pool does when an actor dies
    assert await store.get(RECORD.session_id) == RECORD  # still resumable for a while
    await gone(store, RECORD.session_id)
    await store.expire(RECORD.session_id, 5)  # expiring what is gone is no error


async def test_the_writer_writes_the_newest_record_once_a_burst_is_over(store):
    writer = RecordWriter(store, ttl_s=60)
    conversation = Conversation(Character(id="ava", name="Ava"), max_turns=4, session=RECORD.session_id,
                                on_change=lambda: writer.save(SessionRecord(
                                    **{**RECORD.__dict__, "history": conversation.history})))
    for n in range(5):
        conversation.record(f"question {n}", f"answer {n}")
    await writer.flush()
    stored = await store.get(RECORD.session_id)
    assert [m["content"] for m in stored.history] == [m["content"] for m in conversation.history]
    assert stored.history[-1] == {"role": "assistant", "content": "answer 4"}


async def test_a_failing_store_does_not_fail_the_session(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    writer = RecordWriter(EmbeddedStore(blocked / "sessions.sqlite3"), ttl_s=60)
    writer.save(RECORD)
    writer.save(RECORD)
    await writer.flush()  # no exception
    assert "cannot be resumed" in caplog.text


def test_a_resumed_conversation_goes_on_from_its_history():
    conversation = Conversation(Character(id="ava", name="Ava", system_prompt="Be brief."), max_turns=4,
                                history=RECORD.history)
    assert conversation.messages("Wie heiße ich?") == [
        {"role": "system", "content": "Be brief."}, *RECORD.history, {"role": "user", "content": "Wie heiße ich?"}]
    assert len(Conversation(Character(id="ava", name="Ava"), max_turns=1, history=RECORD.history * 3)) == 1


async def test_bad_store_settings_say_what_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("DH_NO_SUCH_URL", raising=False)
    with pytest.raises(ConfigError, match="DH_NO_SUCH_URL"):
        open_store(StoreSettings(backend="redis", url_env="DH_NO_SUCH_URL"))
    # A server that is not there: named by the setting, never by the URL (it holds a password).
    monkeypatch.setenv("DH_DOWN_URL", "redis://:s3cret-pw@127.0.0.1:9/0")
    down = open_store(StoreSettings(backend="redis", url_env="DH_DOWN_URL"))
    with pytest.raises(ConfigError, match="store.url_env") as error:
        await down.check()
    assert "s3cret" not in str(error.value)
    await down.close()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="store.path"):
        await EmbeddedStore(tmp_path / "file" / "sessions.sqlite3").check()
    with pytest.raises(ValueError, match="backend"):
        StoreSettings(backend="memcached")
