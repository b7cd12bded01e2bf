"""LLM backends by name; adding one is a module plus a line in ``_ENGINES``."""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import LLMEngine, LLMUnavailable, Message

# name -> (module in this package, class), imported on demand so that optional backends cost
# nothing until chosen
_ENGINES = {
    "llama_cpp": ("llama_cpp", "LlamaCppLLM"),
    "openai": ("openai_compat", "OpenAICompatLLM"),
    "dify": ("dify", "DifyLLM"),
}


def create_llm_engine(name: str, **options: Any) -> LLMEngine:
    """Build the LLM backend called ``name`` with its config ``options``."""
    if name not in _ENGINES:
        raise ValueError(f"Unknown LLM engine {name!r}; known engines: {sorted(_ENGINES)}")
    module, cls = _ENGINES[name]
    return getattr(import_module(f".{module}", __package__), cls)(**options)


__all__ = ["LLMEngine", "LLMUnavailable", "Message", "create_llm_engine"]
