"""Domain errors. One API exception handler turns them into {"message", "extra"}."""

from __future__ import annotations

from typing import Any


class RagStudioError(Exception):
    status_code = 400

    def __init__(self, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class ValidationError(RagStudioError):
    status_code = 422


class Forbidden(RagStudioError):
    status_code = 403


class NotFound(RagStudioError):
    status_code = 404


class Conflict(RagStudioError):
    status_code = 409


class TooManyRequests(RagStudioError):
    """A per-user limit reached: try again after ``retry_after`` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: int, extra: dict[str, Any] | None = None):
        super().__init__(message, {**(extra or {}), "retry_after": retry_after})
        self.retry_after = retry_after


class Ambiguous(Conflict):
    """A name that matches more than one object the caller may see."""
