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
    status = 503

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):  # keep retry_after_s when Ray pickles the exception
        return (type(self), (str(self), self.retry_after_s))
