"""Package dependencies run one way: a Ray-free bottom (config, engines, events, media
constants), `actors/` above it, `serve_app/`'s deployments, ingress and app on top. The
session core in `actors/` needs neither Ray nor aiortc, so it is tested without them."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from serve_app.config import PROJECT_ROOT

BOTTOM = ["serve_app/config.py", "serve_app/events.py", "serve_app/ice.py", "serve_app/engines"]
CORE = ["actors/turn_controller.py", "actors/turn.py", "actors/listener.py", "actors/clock.py",
        "actors/conversation.py", "actors/speculation.py", "actors/reply_audio.py", "actors/deadline.py",
        "actors/errors.py", "actors/store.py", "actors/transports/base.py"]
TOP = ("serve_app.deployments", "serve_app.ingress", "serve_app.app", "serve_app.client", "serve_app.limits")


def files(paths: list[str]) -> list[Path]:
    out = []
    for path in paths:
        p = PROJECT_ROOT / path
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def module_imports(path: Path) -> set[str]:
    """Modules imported at module level (imports inside functions are deferred on purpose)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def offending(path: Path, banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in module_imports(path) if any(m == b or m.startswith(b + ".") for b in banned))


@pytest.mark.parametrize("path", files(BOTTOM), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_the_bottom_imports_nothing_above_it(path):
    assert offending(path, ("ray", "actors") + TOP) == []


@pytest.mark.parametrize("path", files(CORE), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_the_session_core_needs_no_ray_and_no_aiortc(path):
    assert offending(path, ("ray", "aiortc") + TOP) == []


@pytest.mark.parametrize("path", files(["actors"]), ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_actors_import_no_deployment_or_ingress(path):
    assert offending(path, TOP) == []
