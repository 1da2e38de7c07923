"""Encrypted PDFs and Office files opened with the password given at upload (issue 23,
item 6): read and searchable, stored decrypted (the password is kept nowhere), a wrong
password rejects that file alone with the reason, the others of the upload go on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from ingestion.pipeline.decrypt import decrypt_document
from ingestion.services import document_file
from knowledge_bases.models import Document
from ragstudio.core.types import DocumentError
from tests.factories import make_kb
from tests.helpers import make_locked_pdf, make_pdf

pytestmark = pytest.mark.django_db

DOCS = Path(__file__).resolve().parents[1] / "data" / "documents"
PASSWORD = "Kr@nich 2026"


def locked_pdf(text: str, password: str = PASSWORD) -> bytes:
    return make_locked_pdf(text, password)


def locked_docx(password: str = PASSWORD) -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO((DOCS / "manual.docx").read_bytes())).encrypt(password, out)
    return out.getvalue()


def test_decrypt_opens_pdf_and_office_files_and_says_why_not() -> None:
    pdf = decrypt_document(locked_pdf("Cranes rest at Linum"), PASSWORD, max_bytes=10**7)
    assert pdf is not None and b"/Encrypt" not in pdf
    docx = decrypt_document(locked_docx(), PASSWORD, max_bytes=10**7)
    assert docx is not None and docx.startswith(b"PK")  # the Word file's zip, opened
    with pytest.raises(DocumentError, match="PDF: the password given does not open it"):
        decrypt_document(locked_pdf("x"), "guess", max_bytes=10**7)
    with pytest.raises(DocumentError, match="Office document: the password given does not"):
        decrypt_document(locked_docx(), "guess", max_bytes=10**7)
    # Files that are not encrypted are left as they are.
    assert decrypt_document(make_pdf(["plain"]), PASSWORD, max_bytes=10**7) is None
    assert decrypt_document((DOCS / "manual.docx").read_bytes(), "x", max_bytes=10**7) is None
    with pytest.raises(DocumentError, match="decrypted file is too large"):
        decrypt_document(locked_docx(), PASSWORD, max_bytes=1000)


def test_an_upload_s_password_opens_its_encrypted_files(alice, client_for) -> None:  # type: ignore[no-untyped-def]
    make_kb(alice, "locked")
    client = client_for(alice)
    files = [
        SimpleUploadedFile("report.pdf", locked_pdf("Cranes rest at Linum each October")),
        SimpleUploadedFile("manual.docx", locked_docx()),
        SimpleUploadedFile("plain.txt", b"An ordinary note about tripods and mounts."),
        SimpleUploadedFile("other.pdf", locked_pdf("Another password", password="else")),
    ]
    response = client.post("/api/kbs/locked/documents", {"files": files, "password": PASSWORD})
    assert response.status_code == 202, response.content
    body = response.json()
    assert sorted(d["original_filename"] for d in body["accepted"]) == [
        "manual.docx",
        "plain.txt",
        "report.pdf",
    ]
    assert body["rejected"] == [
        {
            "filename": "other.pdf",
            "reason": "encrypted PDF: the password given does not open it",
        }
    ]
    run_job_and_queue(IngestionJob.objects.latest("pk").pk)
    documents = {d.original_filename: d for d in Document.objects.all()}
    assert {n: d.status for n, d in documents.items()} == dict.fromkeys(
        ("report.pdf", "manual.docx", "plain.txt"), "indexed"
    )
    # Stored decrypted: rebuilds read it again without the password, which is kept nowhere.
    stored = document_file(documents["report.pdf"])
    assert b"/Encrypt" not in stored
    assert document_file(documents["manual.docx"]).startswith(b"PK")
    for query, name in [("Linum October", "report.pdf"), ("Counterweight 2022", "manual.docx")]:
        top = client.post(
            "/api/kbs/locked/search",
            {"query": query, "mode": "lexical", "limit": 1},
            content_type="application/json",
        ).json()["results"][0]
        assert top["citation"]["filename"] == name


def test_without_a_password_encrypted_files_are_refused_with_the_reason(  # type: ignore[no-untyped-def]
    alice, client_for
) -> None:
    make_kb(alice, "nopass")
    client = client_for(alice)
    response = client.post(
        "/api/kbs/nopass/documents",
        {"files": [SimpleUploadedFile("manual.docx", locked_docx())]},
    )
    assert response.status_code == 422
    assert "encrypted Office document: a password is needed" in response.content.decode()
    too_long = client.post(
        "/api/kbs/nopass/documents",
        {"files": [SimpleUploadedFile("m.docx", locked_docx())], "password": "x" * 1025},
    )
    assert too_long.status_code == 422 and Document.objects.count() == 0


def test_the_upload_page_and_a_new_version_take_the_password(alice, client) -> None:  # type: ignore[no-untyped-def]
    make_kb(alice, "pages")
    client.force_login(alice)
    page = client.get("/kbs/pages/").content.decode()
    assert 'type="password"' in page and "stored decrypted" in page
    response = client.post(
        "/kbs/pages/upload/",
        {"files": [SimpleUploadedFile("report.pdf", locked_pdf("Herons"))], "password": PASSWORD},
    )
    assert response.status_code == 302
    document = Document.objects.get()
    assert b"/Encrypt" not in document_file(document)
    replaced = client.post(
        f"/kbs/pages/documents/{document.pk}/replace/",
        {"file": SimpleUploadedFile("v2.pdf", locked_pdf("Storks")), "password": "guess"},
        follow=True,
    )
    assert "the password given does not open it" in replaced.content.decode()
    client.post(
        f"/kbs/pages/documents/{document.pk}/replace/",
        {"file": SimpleUploadedFile("v2.pdf", locked_pdf("Storks")), "password": PASSWORD},
    )
    document.refresh_from_db()
    assert document.version == 2


@pytest.mark.django_db(transaction=True)
def test_the_ingest_command_reads_the_password_from_a_file(tmp_path: Path) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "report.pdf").write_bytes(locked_pdf("Spoonbills nest in reeds"))
    secret = tmp_path / "secret.txt"
    secret.write_text(PASSWORD + "\n")
    with pytest.raises(CommandError, match="cannot read the password file"):
        call_command("ingest", "--kb", "cli", "--create", "--password-file", "nope", str(folder))
    out = io.StringIO()
    call_command(
        "ingest", "--kb", "cli", "--create", "--password-file", str(secret), str(folder), stdout=out
    )
    document = Document.objects.get(original_filename="report.pdf")
    assert document.status == "indexed", out.getvalue()
    assert document.chunk_count >= 1 and b"/Encrypt" not in document_file(document)
