"""Errors a session raises to its callers; the ingress maps each to one HTTP status.

Ray re-raises an actor's exception in the caller as a subclass of the original class, so
`except SessionNotFound` works across the process boundary.
"""
from __future__ import annotations


class SessionError(Exception):
    status = 500


class BadRequest(SessionError):
    status = 400


class SessionForbidden(SessionError):
    status = 403

    def __init__(self, message: str = "missing or wrong session token") -> None:
        super().__init__(message)


class SessionNotFound(SessionError):
    status = 404


class SessionConflict(SessionError):
    status = 409


class InvalidChoice(SessionError):
    """An unknown avatar, character or voice was asked for."""

    status = 422


class CapacityError(SessionError):
    """No room now; retry after `retry_after_s` (503, or 429 for a rate limit: RateLimited)."""

    status = 503

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):  # keep retry_after_s when Ray pickles the exception
        return (type(self), (str(self), self.retry_after_s))


class RateLimited(CapacityError):
    status = 429


STAGE_LABELS = {  # how the client's error events name each stage
    "asr": "speech recognition",
    "llm": "the language model",
    "tts": "speech synthesis",
    "lipsync": "lip-sync",
    "realtime": "the realtime model",
}


class StageFailed(Exception):
    """A model stage (asr, llm, tts, lipsync, realtime) failed or timed out during a turn.
    The message is for the client: short, and free of tracebacks, pids, addresses and actor ids."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{STAGE_LABELS[stage]} failed: {reason}")
        self.stage = stage


def public_reason(exc: BaseException) -> str:
    """What a client may be told about a remote failure.

    Our own errors (ASRUnavailable, LLMUnavailable, ...) carry messages written for people;
    Ray's system errors carry tracebacks, pids and IPs, so they get a plain sentence instead.
    """
    import ray.exceptions

    if isinstance(exc, (TimeoutError, ray.exceptions.GetTimeoutError)):
        return "it did not answer in time"
    if isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
        return "its server stopped; it is being restarted, try again in a moment"
    if isinstance(exc, ray.exceptions.RayTaskError):
        exc = exc.cause if exc.cause is not None else exc
        if isinstance(exc, ray.exceptions.RayError):
            return "its server failed"
    if isinstance(exc, ray.exceptions.RayError):
        return "its server is unavailable; try again in a moment"
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
