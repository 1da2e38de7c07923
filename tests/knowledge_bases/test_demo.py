"""`manage.py seed_demo`, what `make run` starts with: a demo user and knowledge base from
the sample documents, searchable once its job has run, and nothing duplicated on a second
run."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.management.commands.seed_demo import SAMPLES
from knowledge_bases.models import Document, KnowledgeBase

pytestmark = pytest.mark.django_db(transaction=True)


def seed(settings, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    out = StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def search(query: str) -> list[dict]:
    out = StringIO()
    call_command("search", query, "--kb", "demo", "--json", stdout=out)
    return json.loads(out.getvalue())["results"]


def test_the_demo_is_searchable_and_seeding_again_adds_nothing(settings, tmp_path) -> None:
    said = seed(settings, tmp_path)
    kb = KnowledgeBase.objects.get(slug="demo")
    job = IngestionJob.objects.get(generation__knowledge_base=kb)
    assert f"queued job {job.pk} for {len(list(SAMPLES.iterdir()))} documents" in said

    # The password printed is the one stored (and only the owner may read the file).
    credentials = tmp_path / "demo-credentials.txt"
    name, password = credentials.read_text().split()
    assert f"as {name} / {password}" in said and credentials.stat().st_mode & 0o077 == 0
    assert get_user_model().objects.get(username=name).check_password(password)

    run_job_and_queue(job.pk)
    assert IngestionJob.objects.get(pk=job.pk).status == IngestionJob.Status.SUCCEEDED
    assert set(Document.objects.filter(knowledge_base=kb).values_list("status", flat=True)) == {
        Document.Status.INDEXED
    }
    hits = search("how does a rollback of a generation work")
    assert hits and hits[0]["citation"]["filename"] == "generations.txt", hits[:2]
    # The HTML sample's script and style are not text: never indexed.
    assert not any("never indexed" in h["content"] for h in search("console log never indexed"))

    again = seed(settings, tmp_path)
    assert "up to date" in again and f"as demo / {password}" in again
    assert KnowledgeBase.objects.filter(slug="demo").count() == 1
    assert IngestionJob.objects.filter(generation__knowledge_base=kb).count() == 1
    assert Document.objects.filter(knowledge_base=kb).count() == len(list(SAMPLES.iterdir()))
