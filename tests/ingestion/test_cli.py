from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ingestion.models import IngestionJob
from knowledge_bases.models import Document, KnowledgeBase
from tests.factories import text
from tests.helpers import subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(text(30))
    (folder / "sub" / "b.md").write_text("# Notes\n\nMarkdown body with *emphasis* here.\n")
    (folder / "bad.gif").write_bytes(b"GIF89a\x00\x00")
    (folder / ".hidden").write_text("never read")
    return folder


def _ingest(*args: str) -> str:
    out = io.StringIO()
    call_command("ingest", *args, stdout=out)
    return out.getvalue()


def test_ingest_creates_the_kb_runs_the_job_and_summarises(corpus: Path) -> None:
    output = _ingest("--kb", "cli", "--create", str(corpus), "--store-batch-size", "7")
    summary = output.strip().splitlines()[-1]
    match = re.fullmatch(
        r"done: 3 documents, (\d+) chunks, (\d+) embedded, (\d+) persisted, 1 failed in [\d.]+ s",
        summary,
    )
    assert match, summary
    chunks, embedded, persisted = map(int, match.groups())
    assert chunks == embedded == persisted > 0
    assert "failed: bad.gif: unsupported file type: GIF image" in output
    assert output.index("failed: bad.gif") < output.index("done:")
    kb = KnowledgeBase.objects.get(slug="cli")
    assert sorted(
        Document.objects.filter(knowledge_base=kb).values_list("original_filename", flat=True)
    ) == [
        "a.txt",
        "b.md",
    ]
    job = IngestionJob.objects.get()
    assert (job.store_batch_size, job.status, job.persisted) == (7, "succeeded", chunks)


def test_ingesting_the_same_files_again_reports_them_unchanged(corpus: Path, tmp_path) -> None:
    _ingest("--kb", "cli", "--create", str(corpus / "a.txt"))
    output = _ingest("--kb", "cli", str(corpus / "a.txt"))
    assert "unchanged: a.txt (the same as v1)" in output
    copy = tmp_path / "copy-of-a.txt"
    copy.write_bytes((corpus / "a.txt").read_bytes())
    output = _ingest("--kb", "cli", str(copy))
    assert "duplicate: copy-of-a.txt (same content as a.txt)" in output
    assert output.strip().endswith("0 failed in " + output.strip().split(" in ")[-1])
    assert IngestionJob.objects.count() == 1


def test_a_missing_kb_without_create_is_an_error(corpus: Path) -> None:
    with pytest.raises(CommandError, match="no knowledge base 'nope': pass --create"):
        _ingest("--kb", "nope", str(corpus))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kb", "x", "--create", "/no/such/path"], "no such file or directory"),
        (
            ["--kb", "x", "--create", "PATH", "--store-batch-size", "0"],
            "must be between 1 and 100000",
        ),
        (
            ["--kb", "x", "--create", "PATH", "--embed-batch-size", "many"],
            "'many' is not an integer",
        ),
        (["--kb", "Bad Slug!", "--create", "PATH"], "slug must be"),
    ],
)
def test_bad_arguments_are_clear_errors(corpus: Path, args: list[str], message: str) -> None:
    args = [str(corpus) if a == "PATH" else a for a in args]
    with pytest.raises(CommandError, match=message):
        _ingest(*args)
    assert not Document.objects.exists()


def test_a_failed_job_is_a_nonzero_exit_with_its_reason(corpus: Path, monkeypatch) -> None:
    from knowledge_bases.generations import storage as build_storage

    def broken(spec: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("cannot load the embedding model")

    monkeypatch.setattr(build_storage, "embedder_get", broken)
    with pytest.raises(CommandError, match=r"job \d+ failed: cannot load the embedding model"):
        _ingest("--kb", "cli", "--create", str(corpus))


@pytest.mark.subprocess
def test_the_command_line_exit_status_and_live_progress(corpus: Path, tmp_path: Path) -> None:
    """The real command in its own process, against the test database."""
    env = subprocess_env(tmp_path / "data")
    for i in range(40):  # enough work for the progress line to print at least once
        (corpus / f"extra{i}.txt").write_bytes(text(30, f"subject{i}"))
    ok = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "ingest",
            "--kb",
            "proc",
            "--create",
            str(corpus),
            "--store-batch-size",
            "100",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    progress = [ln for ln in lines if ln.startswith("embedded ")]
    assert progress, ok.stdout
    line = r"embedded \d+/\d+{} \| persisted \d+ \| buffer \d+ \| \d+ chunks/s \| ETA [\d:-]+"
    # While documents are still being read the total is a lower bound, and says so.
    assert all(re.fullmatch(line.format(r"(\+ \(counting\))?"), p) for p in progress), progress
    assert re.fullmatch(line.format(""), progress[-1]), progress
    assert lines[-1].startswith("done: 43 documents,") and ", 1 failed in " in lines[-1]
    missing = subprocess.run(
        [sys.executable, "manage.py", "ingest", "--kb", "absent", str(corpus)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0
    assert "no knowledge base 'absent'" in missing.stderr
