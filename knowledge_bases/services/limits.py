"""Per-user rate limits (issue 25): searches and uploads a minute, counted in the database
(one row per user, kind and minute), so every web process and host agrees."""

from __future__ import annotations

import time
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from knowledge_bases.models import RateCounter
from ragstudio.env import rag_settings


def clock() -> float:
    return time.time()


KINDS = {"search": "USER_SEARCHES_PER_MINUTE", "upload": "USER_UPLOADS_PER_MINUTE"}
WINDOW = 60


def rate_limit_take(*, user: Any, kind: str, now: float | None = None) -> int:
    """Count one request of ``kind`` for ``user``: 0 when it is within the limit, else the
    seconds until the next minute (for Retry-After). Staff and anonymous requests are not
    counted; a limit of 0 is none."""
    limit = rag_settings()[KINDS[kind]]  # type: ignore[literal-required]
    if not limit or not getattr(user, "pk", None) or getattr(user, "is_staff", False):
        return 0
    now = clock() if now is None else now
    window = int(now // WINDOW)
    key = f"{kind}:{user.pk}"
    rows = RateCounter.objects.filter(key=key, window=window)
    if not rows.update(count=F("count") + 1):
        try:
            with transaction.atomic():
                RateCounter.objects.create(key=key, window=window, count=1)
        except IntegrityError:  # another process made the row first
            rows.update(count=F("count") + 1)
    count = rows.values_list("count", flat=True).first() or 0
    if count <= limit:
        return 0
    return max(1, int((window + 1) * WINDOW - now))


def rate_counters_prune(now: float | None = None) -> int:
    """Counters of minutes past (the daily cleanup)."""
    now = clock() if now is None else now
    deleted, _ = RateCounter.objects.filter(window__lt=int(now // WINDOW) - 1).delete()
    return int(deleted)
