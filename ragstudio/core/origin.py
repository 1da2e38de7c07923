"""Where the current action comes from, for the audit trail: the web middleware sets it per
request (the address, whether a page or an API was used, and the request, whose user is
known only once its key or session is checked), ``manage.py`` for a command or a worker.
Events read it when the code that records them was not handed the actor itself."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

VIAS = ("web", "api", "cli", "worker", "system")


@dataclass(frozen=True)
class Origin:
    via: str = "system"
    ip: str | None = None
    request: Any = None  # its ``user`` is read when an event is recorded
    request_id: str = ""

    def user(self) -> Any | None:
        user = getattr(self.request, "user", None)
        return user if getattr(user, "is_authenticated", False) else None


_NOWHERE = Origin()
_current: ContextVar[Origin | None] = ContextVar("ragstudio_origin", default=None)


def current_origin() -> Origin:
    return _current.get() or _NOWHERE


@contextmanager
def acting_from(origin: Origin) -> Iterator[None]:
    token = _current.set(origin)
    try:
        yield
    finally:
        _current.reset(token)


def set_process_origin(via: str) -> None:
    """The origin of everything a process does outside requests (a command, a worker)."""
    _current.set(Origin(via=via))


class RequestIdFilter(logging.Filter):
    """Every log line written while a request is answered carries its id and origin (a
    JSON log line shows them; a plain one leaves them out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        origin = current_origin()
        if not hasattr(record, "request_id"):
            record.request_id = origin.request_id or None
        if not hasattr(record, "via"):
            record.via = origin.via
        return True
