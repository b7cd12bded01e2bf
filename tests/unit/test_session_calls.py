"""A session that ends under a request (its actor killed between lookup and answer) is a 404,
never a 500 (seen once in CI: GET /api/sessions/{id} racing the actor's end)."""
from __future__ import annotations

import pytest
import ray.exceptions

from actors.errors import SessionNotFound
from serve_app.ingress import SessionCalls


class _Method:
    def __init__(self, behaviour) -> None:
        self._behaviour = behaviour

    def remote(self, *args):
        return self._behaviour(*args)


class _DyingActor:
    info = _Method(lambda token: _raise(ray.exceptions.ActorDiedError()))
    say = _Method(lambda token, text: _answer({"turn_id": "t1"}))


def _raise(exc):
    async def fail():
        raise exc
    return fail()


def _answer(value):
    async def ok():
        return value
    return ok()


async def test_a_dead_actor_is_session_not_found_and_answers_pass_through():
    calls = SessionCalls(_DyingActor(), "abc")
    with pytest.raises(SessionNotFound, match="abc not found .it has ended"):
        await calls.info.remote("token")
    assert await calls.say.remote("token", "hi") == {"turn_id": "t1"}
