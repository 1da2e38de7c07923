"""Sources through the API, the page and the command line: create (refused with the
setting named when it cannot be used), list with the status line, sync now, remove."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from ingestion.models import IngestionJob, Source
from knowledge_bases.models import Document
from tests.factories import make_kb, make_user, text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def folder(tmp_path: Path, settings) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "allowed"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_bytes(text(6, "alpha"))
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "SOURCE_FOLDER_ROOTS": [root]}
    return root / "notes"


def test_sources_through_the_api(alice, folder: Path, client_for) -> None:
    make_kb(alice, "notes")
    client = client_for(alice)
    bad = client.post(
        "/api/kbs/notes/sources",
        {"name": "n", "kind": "folder", "config": {"path": "/etc"}},
        content_type="application/json",
    )
    assert bad.status_code == 422 and "outside the folders allowed" in bad.json()["message"]
    response = client.post(
        "/api/kbs/notes/sources",
        {"name": "notes", "kind": "folder", "config": {"path": str(folder)}, "schedule_minutes": 0},
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    source_id = response.json()["id"]
    assert response.json()["status"] == "never"
    synced = client.post(f"/api/kbs/notes/sources/{source_id}/sync")
    assert synced.status_code == 202
    listed = client.get("/api/kbs/notes/sources").json()
    assert [s["name"] for s in listed] == ["notes"]
    patched = client.patch(
        f"/api/kbs/notes/sources/{source_id}",
        {"delete_missing": False},
        content_type="application/json",
    )
    assert patched.json()["delete_missing"] is False
    reader = make_user("rae")
    Source.objects.get().knowledge_base.shared_with.add(reader)
    refused = client_for(reader).post(f"/api/kbs/alice~notes/sources/{source_id}/sync")
    assert refused.status_code == 403
    assert client.delete(f"/api/kbs/notes/sources/{source_id}").status_code == 204
    assert not Source.objects.exists()


def test_sources_on_the_page_and_the_command_line(alice, folder: Path, login) -> None:
    kb = make_kb(alice, "notes")
    client = login(alice)
    page = client.post(
        "/kbs/notes/sources/",
        {"name": "x", "kind": "folder", "location": "/etc", "schedule_minutes": 0},
    )
    assert page.status_code == 422 and "outside the folders allowed" in page.content.decode()
    response = client.post(
        "/kbs/notes/sources/",
        {
            "name": "notes",
            "kind": "folder",
            "location": str(folder),
            "schedule_minutes": 0,
            "delete_missing": "on",
        },
    )
    assert response.status_code == 302
    source = Source.objects.get()
    out = io.StringIO()
    call_command("sources", "--kb", "notes", "sync", str(source.pk), stdout=out)
    assert "1 seen, 1 added" in out.getvalue()
    assert Document.objects.get(knowledge_base=kb).status == "indexed"  # run in the foreground
    listing = client.get("/kbs/notes/sources/").content.decode()
    assert 'data-testid="source-notes"' in listing and "1 seen, 1 added, 0 changed" in listing
    out = io.StringIO()
    call_command("sources", "--kb", "notes", "list", stdout=out)
    assert "notes" in out.getvalue() and "folder" in out.getvalue()
    assert not IngestionJob.objects.filter(status="queued").exists()
