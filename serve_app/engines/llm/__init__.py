"""LLM backends by name; adding one is a module plus a line in ``_ENGINES``."""
from __future__ import annotations

from typing import Any

from ..registry import create_engine
from .base import LLMEngine, LLMUnavailable, Message

_ENGINES = {
    "llama_cpp": ("llama_cpp", "LlamaCppLLM"),
    "openai": ("openai_compat", "OpenAICompatLLM"),
    "dify": ("dify", "DifyLLM"),
}


def create_llm_engine(name: str, **options: Any) -> LLMEngine:
    """Build the LLM backend called ``name`` with its config ``options``."""
    return create_engine("LLM", __package__, _ENGINES, name, options)


__all__ = ["LLMEngine", "LLMUnavailable", "Message", "create_llm_engine"]
