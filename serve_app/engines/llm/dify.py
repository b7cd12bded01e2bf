"""Dify chat apps (``POST /chat-messages``, streamed as server-sent events).

Dify keeps each conversation's history on its server: a turn sends only the new user message
as ``query`` together with the ``conversation_id`` of the conversation it continues. The
LLMEngine protocol hands over the recent history instead, so this engine remembers, for every
conversation it has started, the turns exchanged in it, and continues the conversation whose
latest turns match the history it is given. A history that matches no conversation (or more
than one) starts a new conversation. The memory is per engine instance: run the Dify backend
with one replica, which is plenty for an HTTP client.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .base import LLMUnavailable, Message

_MAX_CONVERSATIONS = 512  # least recently used ones are forgotten
_MAX_TURNS = 64  # per conversation; callers send fewer
_ANSWER_EVENTS = {"message", "agent_message"}


def _norm(text: str) -> str:
    """Text reduced to its letters and digits, so that the speakable form of a reply (markdown
    and emojis stripped, spaces changed) still matches what the server sent."""
    return re.sub(r"[\W_]+", "", text).lower()


def _turns(messages: list[Message]) -> list[tuple[str, str]]:
    """(user, assistant) pairs of a history, normalized; system messages are Dify's business."""
    turns: list[tuple[str, str]] = []
    for m in messages:
        if m.get("role") == "user":
            turns.append((_norm(m.get("content", "")), ""))
        elif m.get("role") == "assistant" and turns:
            turns[-1] = (turns[-1][0], turns[-1][1] + _norm(m.get("content", "")))
    return turns


class DifyLLM:
    """A Dify chat app as an LLMEngine. ``base_url`` is the app's API base, e.g.
    ``https://api.dify.ai/v1`` or ``http://my-dify/v1``; the app's API key is read from the
    environment variable named by ``api_key_env``."""

    def __init__(
        self,
        base_url: str,
        api_key_env: str = "DIFY_API_KEY",
        timeout_s: float = 10.0,
        user: str = "digital-human",
    ) -> None:
        key = os.environ.get(api_key_env, "")
        if not key:
            raise LLMUnavailable(
                f"Dify at {base_url} needs the app's API key: set the environment variable "
                f"{api_key_env}"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.user = user
        self._headers = {"Authorization": f"Bearer {key}"}
        self._timeout = httpx.Timeout(timeout_s)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        # conversation_id -> the (user, assistant) turns exchanged in it
        self._conversations: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self._owners: dict[str, str | None] = {}  # conversation_id -> the session that started it
        self._stop_tasks: set[asyncio.Task] = set()

    async def prefill(self, messages: list[Message], max_tokens: int | None = None) -> None:
        """Nothing to warm here: the endpoint manages its own prompt cache."""

    async def stream(
        self, messages: list[Message], max_tokens: int | None = None, session: str | None = None
    ) -> AsyncIterator[str]:
        """Yield the answer's deltas. ``max_tokens`` is ignored: the Dify app sets it.

        Closing the generator early closes the HTTP stream and asks Dify to stop the task.
        """
        history = _turns(messages)
        if not history:
            raise ValueError("Dify needs a user message to answer")
        query = next(m["content"] for m in reversed(messages) if m.get("role") == "user")
        conversation_id = self._find_conversation(history[:-1], session)
        body = {
            "inputs": {},
            "query": query,
            "response_mode": "streaming",
            "conversation_id": conversation_id or "",
            # Dify lists and continues conversations per user: one per session.
            "user": f"{self.user}-{session}" if session else self.user,
        }
        answer: list[str] = []
        task_id = None
        finished = False
        try:
            async with self._http().stream(
                "POST", f"{self.base_url}/chat-messages", json=body
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    if conversation_id:  # e.g. deleted on the server: start afresh next time
                        self._conversations.pop(conversation_id, None)
                        self._owners.pop(conversation_id, None)
                        conversation_id = None
                    raise LLMUnavailable(self._status_message(response))
                async for event in _sse_events(response):
                    kind = event.get("event")
                    task_id = event.get("task_id") or task_id
                    conversation_id = event.get("conversation_id") or conversation_id
                    if kind in _ANSWER_EVENTS and event.get("answer"):
                        answer.append(event["answer"])
                        yield event["answer"]
                    elif kind == "message_end":
                        break
                    elif kind == "error":
                        raise LLMUnavailable(
                            f"Dify at {self.base_url} failed: {event.get('code', 'error')}: "
                            f"{event.get('message', '')}"[:300]
                        )
                finished = True
        except httpx.TimeoutException:
            raise LLMUnavailable(
                f"Dify at {self.base_url} did not answer within {self.timeout_s} s"
            ) from None
        except httpx.HTTPError as e:
            why = f"cannot reach Dify at {self.base_url}: {type(e).__name__}"
            raise LLMUnavailable(why) from None
        finally:
            if conversation_id:
                turn = (history[-1][0], _norm("".join(answer)))
                self._remember(conversation_id, history[:-1] + [turn], session)
            if task_id and not finished:
                self._stop(task_id, body["user"])

    def _http(self) -> httpx.AsyncClient:
        """One client (connection pool) per event loop, so that turns skip the TLS handshake."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
            self._client_loop = loop
        return self._client

    def _find_conversation(self, turns: list[tuple[str, str]], session: str | None) -> str | None:
        """The one conversation of ``session`` that ends with ``turns`` (callers keep only the
        latest turns), where a reply in ``turns`` may be a prefix of the one sent (the caller
        keeps only what was spoken before a barge-in). Another session's never matches."""
        if not turns:
            return None
        matches = [
            cid
            for cid, known in self._conversations.items()
            if self._owners.get(cid) == session
            and len(known) >= len(turns)
            and all(
                u == ku and ka.startswith(a)
                for (u, a), (ku, ka) in zip(turns, known[-len(turns) :])
            )
        ]
        if len(matches) != 1:
            return None
        self._conversations.move_to_end(matches[0])
        return matches[0]

    def _remember(self, conversation_id: str, turns: list[tuple[str, str]], session: str | None) -> None:
        self._conversations[conversation_id] = turns[-_MAX_TURNS:]
        self._owners[conversation_id] = session
        self._conversations.move_to_end(conversation_id)
        while len(self._conversations) > _MAX_CONVERSATIONS:
            forgotten, _ = self._conversations.popitem(last=False)
            self._owners.pop(forgotten, None)

    def _stop(self, task_id: str, user: str) -> None:
        """Ask Dify to stop generating, in the background so that barge-in does not wait.
        `user` is the one the task was started for: Dify stops only its own user's tasks."""

        async def stop() -> None:
            try:
                await self._http().post(
                    f"{self.base_url}/chat-messages/{task_id}/stop", json={"user": user}
                )
            except httpx.HTTPError:
                pass  # best effort: the closed stream already ended our interest

        task = asyncio.get_running_loop().create_task(stop())
        self._stop_tasks.add(task)
        task.add_done_callback(self._stop_tasks.discard)

    def _status_message(self, response: httpx.Response) -> str:
        try:
            detail = response.json().get("message") or response.json().get("code", "")
        except (ValueError, AttributeError):
            detail = ""
        if response.status_code == 401:
            return f"Dify at {self.base_url} rejected the API key (HTTP 401)"
        return f"Dify at {self.base_url} answered HTTP {response.status_code}: {detail}"[:300]


async def _sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream (Dify sends one ``data:`` line each)."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
            if data:
                try:
                    event = json.loads(data)
                except ValueError:
                    raise LLMUnavailable(f"Dify sent a malformed event: {data[:100]}") from None
                yield event
