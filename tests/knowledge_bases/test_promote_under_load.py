"""A reader process searches in a loop while this one promotes, rolls back and collects
generations: no search may fail and no result may mix two generations."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge_bases.models import Generation
from ragstudio.testing.generations import make_generation
from ragstudio.testing.swap import flip_generations, start_probe, stop_probe
from tests.factories import make_kb, make_user
from tests.helpers import subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
S = Generation.Status


def test_searches_never_fail_or_mix_generations_while_generations_swap(tmp_path: Path) -> None:
    kb = make_kb(make_user(), "swap")
    kb.retention = 0
    kb.save()
    make_generation(kb, S.ARCHIVED)
    make_generation(kb, S.READY)
    make_generation(kb, S.ACTIVE)  # 3
    doomed = [make_generation(kb, S.ARCHIVED) for _ in range(3)]  # 4-6: archived long ago
    proc, stop, out = start_probe(kb, tmp_path, subprocess_env(tmp_path / "data"))
    try:
        done = flip_generations(kb, [1, 2, 3], flips=150, gc_every=25, min_seconds=4.0)
    finally:
        stats = stop_probe(proc, stop, out)
    assert done["promotes"] > 50 and done["rollbacks"] > 20
    # GC ran and deleted the old generations while the reader was searching...
    assert sorted(set(done["collected"])) == [g.number for g in doomed]
    # ...and the reader never failed, never saw a mix, and saw the swaps.
    assert stats["queries"] > 50, stats
    assert (stats["failed"], stats["mixed"], stats["empty"]) == (0, 0, 0), stats
    assert len(stats["generations_seen"]) >= 2, stats
