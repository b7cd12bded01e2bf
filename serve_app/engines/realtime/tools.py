"""Functions a realtime model may call (`conversation.realtime.tools` in the profile).

Each tool has a name, a description and JSON-schema parameters (sent in `session.update`),
and answers a call's arguments with a JSON-able dict. A tool never raises into the session:
bad arguments or a failed lookup answer {"error": ...}, which the model can say or recover
from.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any, Callable, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

MAX_ARGUMENT_CHARS = 2000  # the model's arguments; a longer string is refused, not parsed


class Tool(Protocol):
    name: str
    description: str
    parameters: dict

    def __call__(self, arguments: dict) -> dict: ...


class CurrentTime:
    name = "current_time"
    description = "The current date and time, in a time zone (an IANA name such as Asia/Shanghai; default UTC)."
    parameters = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": []}

    def __init__(self, character: Any = None, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def __call__(self, arguments: dict) -> dict:
        zone = str(arguments.get("timezone") or "UTC")
        try:
            now = self._clock().astimezone(ZoneInfo(zone))
        except (ZoneInfoNotFoundError, ValueError):
            return {"error": f"unknown time zone {zone[:60]!r}; use an IANA name such as Europe/Paris"}
        return {"timezone": zone, "date": now.date().isoformat(), "time": now.strftime("%H:%M"),
                "weekday": now.strftime("%A")}


class FaqLookup:
    """The character's FAQ file (Character.faq_file): the entry whose question shares the
    most words with the query."""

    name = "faq_lookup"
    description = "Look up an answer in this character's list of frequently asked questions."
    parameters = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}

    def __init__(self, character: Any, clock: Any = None) -> None:
        path: Path | None = getattr(character, "faq_file", None)
        if path is None:
            raise ValueError(f"character {character.id!r} has no faq_file for the faq_lookup tool")
        try:
            entries = yaml.safe_load(path.read_text()) or []
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and {"question", "answer"} <= e.keys()
                                                    for e in entries):
            raise ValueError(f"{path}: an FAQ file is a list of {{question, answer}} entries")
        self._entries = [(_words(str(e["question"])), str(e["question"]), str(e["answer"])) for e in entries]

    def __call__(self, arguments: dict) -> dict:
        query = _words(str(arguments.get("query") or ""))
        if not query:
            return {"error": "give a query"}
        score, question, answer = max(((len(words & query), q, a) for words, q, a in self._entries),
                                      default=(0, "", ""))
        if score == 0:
            return {"answer": None, "note": "no entry matches; say you do not know"}
        return {"question": question, "answer": answer}


# A word is a run of letters or digits, or one CJK character (Chinese has no spaces).
_WORD = re.compile(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+")
_STOP = {"the", "a", "an", "is", "are", "what", "how", "do", "does", "i", "you", "of", "to"}


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.casefold())) - _STOP


TOOLS: dict[str, type] = {tool.name: tool for tool in (CurrentTime, FaqLookup)}


class ToolBox:
    """The tools one session's model may call."""

    def __init__(self, names: list[str], character: Any, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._tools: dict[str, Tool] = {name: TOOLS[name](character, clock) for name in names}

    def specs(self) -> list[dict]:
        """What session.update lists."""
        return [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
                for t in self._tools.values()]

    def call(self, name: str, arguments: str) -> str:
        """A call's output, as the JSON string `function_call_output` carries."""
        tool = self._tools.get(name)
        if tool is None:
            result: dict = {"error": f"no tool named {name[:60]!r}; available: {sorted(self._tools)}"}
        elif len(arguments) > MAX_ARGUMENT_CHARS:
            result = {"error": "the arguments are too long"}
        else:
            try:
                parsed = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                parsed = None
            result = tool(parsed) if isinstance(parsed, dict) else {"error": "the arguments must be a JSON object"}
        return json.dumps(result, ensure_ascii=False)
