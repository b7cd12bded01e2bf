"""One sentence for an error of the openai package, naming the endpoint and never the key:
shared by the engines that call OpenAI-compatible servers (LLM chat, TTS speech)."""
from __future__ import annotations


def describe(e: Exception, where: str, timeout_s: float, key: str, key_env: str | None,
             not_found: str = "has no such model or API") -> str:
    import openai

    if isinstance(e, openai.APITimeoutError):
        why = f"{where} did not answer within {timeout_s} s"
    elif isinstance(e, openai.APIConnectionError):
        why = f"cannot reach {where}"
    elif isinstance(e, (openai.AuthenticationError, openai.PermissionDeniedError)):
        # The server's own message may quote part of the key: leave it out.
        key_from = f"${key_env}" if key_env else "(no key configured)"
        why = f"{where} rejected the API key {key_from} (HTTP {e.status_code})"
    elif isinstance(e, openai.NotFoundError):
        why = f"{where} {not_found} (HTTP 404)"
    elif isinstance(e, openai.RateLimitError):
        why = f"{where} is rate limiting or out of quota (HTTP 429)"
    elif isinstance(e, openai.APIStatusError):
        why = f"{where} answered HTTP {e.status_code}: {short(str(e.message))}"
    else:
        why = f"{where} failed: {short(str(e)) or type(e).__name__}"
    return why.replace(key, "***")


def short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
