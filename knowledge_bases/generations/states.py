"""A generation's states and the one function that moves it between them.

building -> ready -> active -> archived -> collected; failed from building (and back to
building when its job is retried), collected from failed; the first generation of a
knowledge base goes building -> active when its first job ends.

``transition()`` is the only writer of a generation's status: it sets the timestamp of
the state entered and records the event (who, when, from, to, why) in one transaction,
and it changes the row only while it is still in the state the caller saw. The model
refuses any other status write (``Generation.status_writer``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from knowledge_bases.models import Generation, GenerationEvent
from ragstudio.core.errors import Conflict

S = Generation.Status

# (from, to) -> the timestamps entering ``to`` sets (ready_at only when not set before).
TRANSITIONS: dict[tuple[str, str], tuple[str, ...]] = {
    (S.BUILDING, S.READY): ("ready_at",),
    (S.BUILDING, S.FAILED): (),
    (S.BUILDING, S.ACTIVE): ("ready_at", "activated_at"),
    (S.READY, S.ACTIVE): ("activated_at",),
    (S.ARCHIVED, S.ACTIVE): ("activated_at",),
    (S.ACTIVE, S.ARCHIVED): ("archived_at",),
    (S.ARCHIVED, S.COLLECTED): ("collected_at",),
    (S.FAILED, S.COLLECTED): ("collected_at",),
    (S.FAILED, S.BUILDING): (),
}
# What a transition may write beside the status and its timestamps.
TRANSITION_FIELDS = frozenset({"error_message", "chunk_count", "vector_count"})


def _record(
    generation: Generation, from_status: str, to_status: str, actor: Any, note: str
) -> None:
    GenerationEvent.objects.create(
        generation=generation,
        from_status=from_status,
        to_status=to_status,
        actor=actor if getattr(actor, "pk", None) else None,
        note=note[:500],
    )


@transaction.atomic
def transition(
    generation: Generation,
    to: str,
    *,
    actor: Any = None,
    note: str = "",
    now: datetime | None = None,
    **fields: Any,
) -> None:
    """Move ``generation`` from the status it holds to ``to`` (Conflict when that is not
    a transition, or when the row has left that status meanwhile); ``fields`` are the
    ones the new state carries (the error of a failed build, the counts of a ready one)."""
    source = generation.status
    stamps = TRANSITIONS.get((source, to))
    if stamps is None:
        raise Conflict(
            f"generation {generation.number} is {source}: it cannot become {to}",
            {"generation": generation.number, "status": source},
        )
    unknown = set(fields) - TRANSITION_FIELDS
    if unknown:
        raise ValueError(f"a transition does not write {sorted(unknown)}")
    now = now or timezone.now()
    values: dict[str, Any] = {"status": to, **fields}
    for stamp in stamps:
        if not (stamp == "ready_at" and generation.ready_at):
            values[stamp] = now
    with Generation.status_writer():
        updated = Generation.objects.filter(pk=generation.pk, status=source).update(**values)
    if not updated:
        raise Conflict(
            f"generation {generation.number} is no longer {source}: try again",
            {"generation": generation.number},
        )
    for name, value in values.items():
        setattr(generation, name, value)
    generation._stored_status = to
    _record(generation, source, to, actor, note)


def created(generation: Generation, *, actor: Any = None, note: str = "") -> None:
    """The event of a new generation (building from nothing)."""
    _record(generation, "", S.BUILDING, actor, note)


def imported(generation: Generation, *, status: str, actor: Any = None, note: str = "") -> None:
    """A generation brought from another installation whole (``kb import``): created here
    as building, it takes the status it had there (its timestamps came with it)."""
    if generation.status != S.BUILDING or status not in (S.READY, S.ACTIVE, S.ARCHIVED):
        raise Conflict(f"generation {generation.number} cannot be imported as {status}")
    with Generation.status_writer():
        Generation.objects.filter(pk=generation.pk, status=S.BUILDING).update(status=status)
    generation.status = status
    generation._stored_status = status
    _record(generation, S.BUILDING, status, actor, note)


def remark(generation: Generation, *, actor: Any = None, note: str) -> None:
    """An event that changes no status (a quality regression found, say)."""
    _record(generation, generation.status, generation.status, actor, note)
