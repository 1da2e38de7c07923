"""A generation's status has one writer: ``knowledge_bases.generations.states.transition``.
Every other way to write it is refused by the model, and no other module may enter the
writer's context; the transitions themselves are the only ones the lifecycle allows."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from knowledge_bases.generations import TRANSITIONS, generation_create, transition
from knowledge_bases.models import Generation, StatusWriteRefused
from ragstudio.core.errors import Conflict
from tests.factories import make_kb

pytestmark = pytest.mark.django_db

S = Generation.Status
ROOT = Path(__file__).resolve().parents[2]
STATES = "knowledge_bases/generations/states.py"


@pytest.fixture
def generation(alice) -> Generation:  # type: ignore[no-untyped-def]
    return generation_create(kb=make_kb(alice, "docs"))


def test_it_refuses_every_status_write_outside_the_state_machine(generation) -> None:
    rows = Generation.objects.filter(pk=generation.pk)
    with pytest.raises(StatusWriteRefused):
        rows.update(status=S.READY)
    generation.status = S.READY
    with pytest.raises(StatusWriteRefused):
        generation.save()
    with pytest.raises(StatusWriteRefused):
        generation.save(update_fields=["status"])
    with pytest.raises(StatusWriteRefused):
        Generation.objects.bulk_update([generation], ["status"])
    copy = Generation(
        knowledge_base=generation.knowledge_base,
        number=99,
        status=S.ACTIVE,
        embedder="local",
        dimensions=384,
        chunk_size=64,
        chunk_overlap=8,
        table_name="t",
    )
    with pytest.raises(StatusWriteRefused):
        copy.save()
    with pytest.raises(StatusWriteRefused):
        Generation.objects.bulk_create([copy])
    assert rows.get().status == S.BUILDING  # nothing got through


def test_it_lets_other_fields_change_as_before(generation) -> None:
    generation.error_message = "noted"
    generation.save()  # the status is unchanged: allowed
    Generation.objects.filter(pk=generation.pk).update(chunk_count=7)
    generation.refresh_from_db()
    assert (generation.error_message, generation.chunk_count) == ("noted", 7)


def test_a_transition_sets_status_timestamp_and_event_together(generation, alice) -> None:
    transition(generation, S.READY, actor=alice, note="built", chunk_count=12)
    stored = Generation.objects.get(pk=generation.pk)
    assert (stored.status, stored.chunk_count) == (S.READY, 12) and stored.ready_at is not None
    event = stored.events.first()
    assert (event.from_status, event.to_status, event.actor, event.note) == (
        S.BUILDING,
        S.READY,
        alice,
        "built",
    )


def test_only_the_lifecycle_s_transitions_are_allowed(generation) -> None:
    with pytest.raises(Conflict, match="cannot become archived"):
        transition(generation, S.ARCHIVED)
    assert (S.BUILDING, S.ARCHIVED) not in TRANSITIONS
    assert Generation.objects.get(pk=generation.pk).events.count() == 1  # "created" only


def test_a_transition_from_a_status_the_row_has_left_is_a_conflict(generation) -> None:
    stale = Generation.objects.get(pk=generation.pk)
    transition(generation, S.FAILED)
    with pytest.raises(Conflict, match="no longer building"):
        transition(stale, S.READY)  # another process saw it building: it is failed now
    assert Generation.objects.get(pk=generation.pk).status == S.FAILED


def _writer_users() -> list[str]:
    """Project modules that enter the status writer's context (by name, read with ast)."""
    found = []
    for package in ("ragstudio", "knowledge_bases", "ingestion", "search", "bench", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
            names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            if names & {"status_writer", "_STATUS_WRITER"}:
                found.append(str(path.relative_to(ROOT)))
    return sorted(found)


def test_no_module_but_the_state_machine_enters_the_writer() -> None:
    # models.py defines the writer; states.py is the one place that uses it.
    assert _writer_users() == [STATES, "knowledge_bases/models.py"]
