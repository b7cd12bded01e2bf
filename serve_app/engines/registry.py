"""One way to build a backend by name for every stage.

Each stage package lists its backends as `name -> (module in the package, class)`. Modules
are imported only when chosen, so an optional backend's dependencies cost nothing until used.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any


def create_engine(stage: str, package: str, engines: dict[str, tuple[str, str]], name: str, options: dict[str, Any]) -> Any:
    if name not in engines:
        raise ValueError(f"Unknown {stage} engine {name!r}; known engines: {sorted(engines)}")
    module, cls = engines[name]
    return getattr(import_module(f".{module}", package), cls)(**options)
