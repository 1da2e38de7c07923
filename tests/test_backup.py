"""Backup and restore of an installation (issue 28, item 2): a backup taken while a job
writes restores into a new data directory, serves the same results, and the job it
interrupted runs again; a damaged backup is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingestion.jobs import run_job_and_queue
from knowledge_bases import backup as backup_module
from knowledge_bases.models import Document
from search.ranking.results import SearchParams
from search.services import knowledge_base_search
from tests.factories import make_kb, text, upload
from tests.helpers import fresh_install_env, manage

pytestmark = [pytest.mark.django_db, pytest.mark.subprocess]
ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["alpha science", "beta science", "gamma"]
MODES = ["vector", "lexical", "hybrid"]

PROBE = """
import json, sys
from knowledge_bases.models import KnowledgeBase
from search.ranking.results import SearchParams
from search.services import knowledge_base_search
kb = KnowledgeBase.objects.get(slug="notes")
out = {}
for query in %(queries)r:
    for mode in %(modes)r:
        hits = knowledge_base_search(kb=kb, params=SearchParams(query=query, mode=mode)).results
        out[f"{mode}:{query}"] = [h.chunk_id for h in hits]
if %(run_job)r:
    from ingestion.jobs import run_job_and_queue
    from ingestion.models import IngestionJob
    job = IngestionJob.objects.get(pk=%(job)r)
    out["job_status_before"] = job.status
    run_job_and_queue(job.pk)
    hits = knowledge_base_search(kb=kb, params=SearchParams(query="gamma", mode="lexical")).results
    out["gamma_after_retry"] = sorted({h.citation.filename for h in hits})
print("RESULT " + json.dumps(out))
"""


def _results(kb) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    return {
        f"{mode}:{query}": [
            h.chunk_id
            for h in knowledge_base_search(
                kb=kb, params=SearchParams(query=query, mode=mode)
            ).results
        ]
        for query in QUERIES
        for mode in MODES
    }


def test_a_backup_taken_while_a_job_writes_restores_and_serves_the_same(
    alice,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kb = make_kb(alice, "notes")
    run_job_and_queue(
        upload(kb, [("alpha.txt", text(12, "alpha")), ("beta.txt", text(12, "beta"))]).job.pk
    )
    kb.refresh_from_db()
    before = _results(kb)
    pending = upload(kb, [("gamma.txt", text(12, "gamma"))]).job
    # The job runs after the database snapshot and before the indexes are copied: its
    # rows are in the copy, its success is not.
    copy = backup_module._copy_generation

    def job_meanwhile(generation, target):  # type: ignore[no-untyped-def]
        if pending.status == "queued":
            run_job_and_queue(pending.pk)
            pending.status = "ran"
        return copy(generation, target)

    monkeypatch.setattr(backup_module, "_copy_generation", job_meanwhile)
    target = tmp_path / "backup"
    call_command("backup", str(target))
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["generations"][0]["number"] == 1
    assert any(name.startswith("uploads/") for name in manifest["files"])
    assert Document.objects.get(original_filename="gamma.txt").status == "indexed"  # here

    env = fresh_install_env(tmp_path / "restored")
    done = manage(env, "restore", str(target))
    assert done.returncode == 0, done.stderr
    assert "restored 3 documents and 1 generations" in done.stdout
    probe = manage(
        env,
        "shell",
        "-c",
        PROBE % {"queries": QUERIES, "modes": MODES, "run_job": True, "job": pending.pk},
    )
    assert probe.returncode == 0, probe.stderr
    line = next(x for x in probe.stdout.splitlines() if x.startswith("RESULT "))
    restored = json.loads(line.removeprefix("RESULT "))
    # The same results for every query and mode: nothing of the job's late rows shows.
    assert {k: restored[k] for k in before} == before
    assert restored["job_status_before"] == "queued"
    assert restored["gamma_after_retry"] == ["gamma.txt"]  # the job ran again, and serves


def test_a_damaged_or_unfinished_backup_is_refused_before_anything_is_written(
    alice,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    kb = make_kb(alice, "notes")
    run_job_and_queue(upload(kb, [("alpha.txt", text(8, "alpha"))]).job.pk)
    target = tmp_path / "backup"
    call_command("backup", str(target))
    with pytest.raises(CommandError, match="not empty"):
        call_command("backup", str(target))
    # This installation has users and knowledge bases: a restore here is refused.
    with pytest.raises(CommandError, match="already has users"):
        call_command("restore", str(target))
    upload_file = next(p for p in (target / "uploads").rglob("*") if p.is_file())
    original = upload_file.read_bytes()
    upload_file.write_bytes(original[:-1] + b"!")
    env = fresh_install_env(tmp_path / "restored")
    damaged = manage(env, "restore", str(target))
    assert damaged.returncode != 0 and "does not match its checksum" in damaged.stderr
    upload_file.write_bytes(original)
    (target / "manifest.json").unlink()
    unfinished = manage(env, "restore", str(target))
    assert unfinished.returncode != 0 and "did not finish" in unfinished.stderr
    # Nothing was written: no upload, no index, no table.
    restored = tmp_path / "restored"
    assert not any(
        (restored / d).exists() and any((restored / d).iterdir())
        for d in ("uploads", "lancedb", "bm25")
    )
