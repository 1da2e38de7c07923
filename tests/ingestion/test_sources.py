"""Sources (issue 24): a folder on tmp_path, a prefix of moto's S3 server, web pages and a
sitemap on a loopback HTTP server, and a local Git repository. Each: add, change, delete,
sync again, and the knowledge base matches; a second sync of an unchanged source embeds
nothing and writes nothing. Addresses a user gives are SSRF attempts until proven
otherwise: private ones (a redirect to 127.0.0.1 included) are refused."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ingestion.connectors import ItemError, Limits
from ingestion.connectors.fetch import resolve_public
from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob, Source, SourceItem
from ingestion.services import source_create, source_sync, sources_due
from knowledge_bases.models import Document, KnowledgeBase
from ragstudio.core.errors import ValidationError
from search.stores.objects import ObjectStore, storage_options_items
from tests.factories import make_kb, text

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def roots(tmp_path: Path, settings) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "allowed"
    root.mkdir()
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "SOURCE_FOLDER_ROOTS": [root]}
    return root


@pytest.fixture
def kb(alice) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    return make_kb(alice, "synced")


def sync(source: Source) -> dict[str, Any]:
    """One sync, its job run to the end; the source's stats."""
    result = source_sync(source_id=source.pk, enqueue=False)
    assert result is not None
    if result.job is not None:
        run_job_and_queue(result.job.pk)
        assert IngestionJob.objects.get(pk=result.job.pk).status == "succeeded"
    source.refresh_from_db()
    assert source.status == Source.Status.OK, source.last_error
    return source.last_stats


def contents(kb: KnowledgeBase) -> dict[str, str]:
    """Each indexed document's file name and text (read back from its stored file)."""
    from knowledge_bases.generations import document_read

    return {
        d.original_filename: document_read(d.storage_path).decode()
        for d in Document.objects.filter(knowledge_base=kb, status="indexed")
    }


def test_a_folder_source_follows_adds_changes_and_deletes(kb, roots: Path) -> None:
    folder = roots / "manuals"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(text(8, "alpha"))
    (folder / "b.md").write_bytes(b"# Bravo\n\n" + text(8, "bravo"))
    (folder / "sub" / "c.txt").write_bytes(text(8, "charlie"))
    (folder / ".hidden").write_bytes(b"secret")
    source = source_create(kb=kb, name="manuals", kind="folder", config={"path": str(folder)})
    stats = sync(source)
    assert (stats["seen"], stats["added"], stats["failed"]) == (3, 3, 0)
    assert sorted(contents(kb)) == ["a.txt", "b.md", "c.txt"]

    again = sync(source)
    assert (again["unchanged"], again["added"], again["changed"], again["job"]) == (3, 0, 0, None)

    (folder / "a.txt").write_bytes(text(9, "alpha"))  # changed
    (folder / "b.md").unlink()  # removed
    (folder / "d.txt").write_bytes(text(8, "delta"))  # added
    stats = sync(source)
    assert (stats["added"], stats["changed"], stats["removed"], stats["unchanged"]) == (1, 1, 1, 1)
    assert contents(kb) == {
        "a.txt": text(9, "alpha").decode(),
        "c.txt": text(8, "charlie").decode(),
        "d.txt": text(8, "delta").decode(),
    }
    a = Document.objects.get(knowledge_base=kb, original_filename="a.txt")
    assert (a.version, a.external_id) == (2, f"source:{source.pk}:a.txt")
    job = IngestionJob.objects.get(pk=stats["job"])
    assert 0 < job.embedded < job.total  # a.txt's unchanged sentences kept their vectors


def test_folders_outside_the_allowed_roots_and_links_out_are_refused(
    kb, roots: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(text(5, "secret"))
    with pytest.raises(ValidationError, match="outside the folders allowed"):
        source_create(kb=kb, name="x", kind="folder", config={"path": str(outside)})
    with pytest.raises(ValidationError, match="outside the folders allowed"):
        source_create(
            kb=kb, name="y", kind="folder", config={"path": str(roots / ".." / "elsewhere")}
        )
    with pytest.raises(ValidationError, match="unknown setting"):
        source_create(kb=kb, name="z", kind="folder", config={"path": str(roots), "pth": 1})
    folder = roots / "linked"
    folder.mkdir()
    (folder / "ok.txt").write_bytes(text(5, "fine"))
    os.symlink(outside / "secret.txt", folder / "leak.txt")
    os.symlink(outside, folder / "leakdir")
    source = source_create(kb=kb, name="linked", kind="folder", config={"path": str(folder)})
    stats = sync(source)
    assert stats["added"] == 1 and sorted(contents(kb)) == ["ok.txt"]
    assert [f["item"] for f in stats["failures"]] == ["leak.txt"]
    assert "out of the folder" in stats["failures"][0]["reason"]


def test_an_s3_prefix_is_synced_with_credentials_from_the_environment(
    kb, s3_server, settings, monkeypatch
) -> None:
    endpoint, bucket = s3_server
    monkeypatch.setenv("DOCS_KEY_ID", "testing")
    monkeypatch.setenv("DOCS_SECRET", "testing")
    host = endpoint.split("//", 1)[1]
    config = {
        "uri": f"s3://{bucket}/synced-{kb.pk}",
        "endpoint": endpoint,
        "region": "us-east-1",
        "access_key_env": "DOCS_KEY_ID",
        "secret_key_env": "DOCS_SECRET",
    }
    with pytest.raises(ValidationError, match="private, loopback or reserved"):
        source_create(kb=kb, name="bucket", kind="s3", config=config)
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "FETCH_ALLOW": [host]}
    store = ObjectStore(
        config["uri"],
        storage_options_items(
            {
                "aws_endpoint": endpoint,
                "aws_region": "us-east-1",
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
                "allow_http": "true",
            }
        ),
    )
    store.put_bytes("one.txt", text(6, "oscar"))
    store.put_bytes("deep/two.txt", text(6, "papa"))
    source = source_create(kb=kb, name="bucket", kind="s3", config=config)
    assert "testing" not in str(source.config)  # only the variables' names are kept
    assert sync(source)["added"] == 2
    assert sync(source)["job"] is None
    store.put_bytes("one.txt", text(7, "oscar"))
    store.delete("deep/two.txt")
    stats = sync(source)
    assert (stats["changed"], stats["removed"]) == (1, 1)
    assert contents(kb) == {"one.txt": text(7, "oscar").decode()}


class Site:
    """A loopback web server: pages with ETags (304 when unchanged), a sitemap, a
    robots.txt, and a redirect to another address."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                site.requests.append(self.path)
                status, headers, body = site.pages.get(self.path, (404, {}, b"not here"))
                if (
                    status == 200
                    and headers.get("ETag")
                    and self.headers.get("If-None-Match") == headers["ETag"]
                ):
                    status, body = 304, b""
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def page(self, path: str, body: str, etag: str) -> None:
        html = f"<html><head><title>{path}</title></head><body><p>{body}</p></body></html>"
        self.pages[path] = (200, {"Content-Type": "text/html", "ETag": etag}, html.encode())


@pytest.fixture
def site() -> Iterator[Site]:
    served = Site()
    yield served
    served.httpd.shutdown()


def test_web_pages_and_a_sitemap_are_synced_and_private_addresses_refused(
    kb, site: Site, settings
) -> None:
    base = f"http://localhost:{site.port}"
    elsewhere = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # never reached
    site.page("/guide", "The guide explains glaciers and their slow movement. " * 5, '"g1"')
    site.page("/faq", "Frequently asked questions about volcanoes erupting. " * 5, '"f1"')
    site.page("/private/notes", "Not for robots at all. " * 5, '"p1"')
    site.pages["/moved"] = (
        302,
        {"Location": f"http://127.0.0.1:{elsewhere.server_address[1]}/secret"},
        b"",
    )
    site.pages["/robots.txt"] = (200, {}, b"User-agent: *\nDisallow: /private/\n")
    urls = "".join(
        f"<url><loc>{base}{p}</loc></url>" for p in ("/guide", "/faq", "/private/notes", "/moved")
    )
    sitemap = f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
    site.pages["/sitemap.xml"] = (200, {"Content-Type": "application/xml"}, sitemap.encode())
    config = {"sitemap": f"{base}/sitemap.xml"}
    with pytest.raises(ValidationError, match="private, loopback or reserved"):
        source_create(kb=kb, name="site", kind="web", config=config, schedule_minutes=0)
    # The operator allows this one test server (its name and port), nothing else.
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "FETCH_ALLOW": [f"localhost:{site.port}"]}
    source = source_create(kb=kb, name="site", kind="web", config=config, schedule_minutes=0)
    stats = sync(source)
    assert (stats["seen"], stats["added"]) == (4, 2)
    reasons = {f["item"].rsplit("/", 1)[-1]: f["reason"] for f in stats["failures"]}
    assert reasons["notes"] == "robots.txt disallows it"
    assert "127.0.0.1" in reasons["moved"] and "refused" in reasons["moved"]
    assert sorted(contents(kb)) == ["faq", "guide"]
    assert "/secret" not in site.requests

    requested = len(site.requests)
    again = sync(source)
    assert again["job"] is None and again["added"] == again["changed"] == 0
    assert len(site.requests) > requested  # it asked (conditionally) and was told 304

    site.page("/guide", "The guide now explains glaciers and fjords carved by ice. " * 5, '"g2"')
    del site.pages["/faq"]
    sitemap = sitemap.replace(f"<url><loc>{base}/faq</loc></url>", "")
    site.pages["/sitemap.xml"] = (200, {}, sitemap.encode())
    stats = sync(source)
    assert (stats["changed"], stats["removed"]) == (1, 1)
    assert list(contents(kb)) == ["guide"] and "fjords" in contents(kb)["guide"]
    elsewhere.server_close()


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        check=True,
        capture_output=True,
    )


def test_a_git_repository_is_synced_by_blob(kb, roots: Path) -> None:
    repo = roots / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "docs").mkdir()
    (repo / "docs" / "install.md").write_bytes(b"# Install\n\n" + text(6, "install"))
    (repo / "docs" / "usage.md").write_bytes(b"# Usage\n\n" + text(6, "usage"))
    (repo / "code.py").write_bytes(b"print('not documentation')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    source = source_create(
        kb=kb,
        name="repo",
        kind="git",
        config={"repository": str(repo), "branch": "main", "include": ["docs/*.md"]},
    )
    assert sync(source)["added"] == 2
    assert sync(source)["job"] is None
    (repo / "docs" / "usage.md").write_bytes(b"# Usage\n\n" + text(7, "usage"))
    (repo / "docs" / "install.md").unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two")
    stats = sync(source)
    assert (stats["changed"], stats["removed"]) == (1, 1)
    assert list(contents(kb)) == ["usage.md"]
    with pytest.raises(ValidationError, match="private, loopback or reserved"):
        source_create(
            kb=kb, name="r2", kind="git", config={"repository": "https://127.0.0.1/x.git"}
        )
    with pytest.raises(ValidationError, match="no other protocol"):
        source_create(kb=kb, name="r3", kind="git", config={"repository": "ssh://host/x.git"})


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "0.0.0.0", "localhost"],
)
def test_private_loopback_and_metadata_addresses_are_refused(host: str) -> None:
    limits = Limits(max_bytes=1000, max_items=10, timeout=1)
    with pytest.raises(ItemError, match="refused"):
        resolve_public(host, 80, limits)
    allowed = Limits(max_bytes=1000, max_items=10, timeout=1, fetch_allow=("0.0.0.0/0", "::/0"))
    assert resolve_public(host, 80, allowed)


def test_a_scheduled_sync_is_due_once_and_a_running_one_is_not_started_twice(
    kb, roots: Path
) -> None:
    folder = roots / "scheduled"
    folder.mkdir()
    (folder / "a.txt").write_bytes(text(5, "alpha"))
    source = source_create(
        kb=kb, name="s", kind="folder", config={"path": str(folder)}, schedule_minutes=30
    )
    manual = source_create(
        kb=kb, name="m", kind="folder", config={"path": str(folder)}, schedule_minutes=0
    )
    assert sources_due() == [source.pk]
    assert sources_due() == []  # pushed to its next slot
    Source.objects.filter(pk=source.pk).update(claimed_at=source.created_at)  # running
    assert source_sync(source_id=source.pk, enqueue=False) is None
    assert manual.next_sync_at is None
    assert not SourceItem.objects.exists()
