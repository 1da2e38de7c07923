"""The pages in a real headless Chromium (Debian's package, driven by Playwright), served
by a live server, with a real django-q2 cluster running the jobs and the bundled model.

Screenshots of every page go to test-artifacts/screenshots/ (CI keeps them)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from playwright.sync_api import expect

from knowledge_bases.models import Generation, KnowledgeBase
from tests.cluster import start_cluster, stop_cluster, wait_for
from tests.factories import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# Chromium as root needs --no-sandbox; the rest keeps it from reaching the internet.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing: .ci/run installs Debian's chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; Django's ORM, called by the
    # test between browser steps, refuses to run beside one unless told it is safe (it is:
    # nothing here is async, the loop only talks to the browser).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm: say yes
    # Anything the Content-Security-Policy blocked (an inline script or style, a CDN).
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(f"{page.url} {message.location}: {message.text[:60]}")
            if "Content Security Policy" in message.text
            else None
        ),
    )
    yield page
    context.close()
    assert violations == [], violations


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def paper(topic: str, n: int) -> bytes:
    sentences = [
        f"Study {i} of {topic} measured effect number {i * 7} in controlled trials."
        for i in range(n)
    ]
    return " ".join(sentences).encode()


def sign_in(page: Any, username: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-" + username)
    page.click("button[type=submit]")
    # Not wait_for_url("**/"): the login page's own URL ends with "/" too.
    page.wait_for_selector("[data-testid=kb-table]")


# One synchronous script reads every counter of the progress fragment: htmx swaps the
# fragment between two separate reads, which once paired embedded from one second with
# persisted from the next (160 embedded, 384 persisted: a page that never existed).
PROGRESS_SNAPSHOT = """() => {
    const section = document.querySelector("#job-progress");
    const read = (id) => section.querySelector(`[data-testid=${id}]`).textContent.trim();
    return [Number(read("embedded")), Number(read("persisted")), Number(read("total")),
            read("job-status")];
}"""


def progress_snapshot(page: Any) -> tuple[int, int, int, str]:
    embedded, persisted, total, status = page.evaluate(PROGRESS_SNAPSHOT)
    return int(embedded), int(persisted), int(total), str(status)


def test_a_user_builds_searches_and_manages_a_knowledge_base(page: Any, tmp_path: Path) -> None:
    # Small flushes so "persisted" visibly trails "embedded"; GC may collect at once.
    django_settings.RAGSTUDIO = {
        **django_settings.RAGSTUDIO,
        "STORE_BATCH_SIZE": 16,
        "GC_MIN_AGE_SECONDS": 0,
    }
    make_user("alice")
    cluster = start_cluster(tmp_path)
    try:
        sign_in(page, "alice")
        shot(page, "01-kb-list-empty")

        # Create: the form's own validation first, then a valid KB.
        page.fill("#id_name", "Papers")
        page.fill("#id_slug", "papers")
        page.fill("#id_chunk_size", "64")
        page.fill("#id_chunk_overlap", "60")
        page.click("form.card button[type=submit]")
        # expect() waits for the page the click loads; inner_text() could read the old one.
        expect(page.locator("main")).to_contain_text("chunk overlap must be between 0 and half")
        shot(page, "02-kb-create-error")
        page.fill("#id_chunk_overlap", "8")
        page.click("form.card button[type=submit]")
        page.wait_for_url("**/kbs/papers/")

        # Upload by the picker: two papers, an in-upload duplicate and an image.
        page.set_input_files(
            "#id_files",
            files=[
                {
                    "name": "insulin.txt",
                    "mimeType": "text/plain",
                    "buffer": paper("insulin resistance", 1500),
                },
                {
                    "name": "sleep.txt",
                    "mimeType": "text/plain",
                    "buffer": paper("sleep deprivation", 600)
                    + b" The zebrafish circadian clock was reset by blue light.",
                },
                {
                    "name": "copy.txt",
                    "mimeType": "text/plain",
                    "buffer": paper("insulin resistance", 1500),
                },
                {
                    "name": "figure.gif",
                    "mimeType": "image/gif",
                    "buffer": b"GIF89a" + b"\x00" * 64,
                },
            ],
        )
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("[data-testid=upload-results]")
        results = page.inner_text("[data-testid=upload-results]")
        assert "insulin.txt accepted" in results and "sleep.txt accepted" in results
        assert re.search(r"copy\.txt: duplicate of 'insulin\.txt' in this upload", results)
        assert "figure.gif: unsupported file type: GIF image" in results
        assert page.locator("[data-testid='doc-insulin.txt']").count() == 1
        shot(page, "03-kb-uploaded")

        # The job page: the counters meet at the total (test_the_job_page_shows_both_
        # counters_rising watches them part-way).
        page.click("[data-testid=job-link]")
        page.wait_for_selector("#job-progress")
        seen: list[tuple[int, int, int, str]] = []

        def finished() -> bool:
            seen.append(progress_snapshot(page))
            return seen[-1][3] in ("succeeded", "failed", "cancelled")

        wait_for(finished, 180, "the job page to show the job finished")
        embedded, persisted, total, status = seen[-1]
        assert status == "succeeded" and embedded == persisted == total > 150
        running = [(e, p, t) for e, p, t, s in seen if s == "running"]
        assert all(p <= e for e, p, _t in running), str(seen)  # never written before embedded
        assert page.locator("#job-progress").get_attribute("hx-trigger") is None  # stopped
        assert page.locator(".chart svg polyline.embedded").count() == 1
        # The bars' widths come from data attributes (the CSP allows no inline styles).
        width = page.eval_on_selector("#job-progress .fill.embedded", "el => el.style.width")
        assert width == "100%", width
        shot(page, "05-job-done")

        # Search, with the keyboard: type and press Enter.
        page.goto("/kbs/papers/search/")
        page.focus("#id_q")
        page.keyboard.type("zebrafish circadian clock")
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-testid=result]")
        first = page.locator("[data-testid=result]").first
        assert "sleep.txt" in first.inner_text()
        assert first.locator("mark").count() >= 2
        shot(page, "06-search")

        # Rebuild with smaller chunks; it is promoted when it passes its check.
        page.goto("/kbs/papers/generations/")
        assert page.locator("[data-testid=rollback]").is_disabled()
        page.fill("#id_chunk_size", "48")
        page.fill("#id_chunk_overlap", "4")
        page.click("[data-testid=rebuild]")
        page.wait_for_selector("text=Rebuild started")
        shot(page, "07-rebuild-running")
        kb = KnowledgeBase.objects.get(slug="papers")
        wait_for(
            lambda: kb.generations.filter(number=2, status="active").exists(),
            240,
            "generation 2 to be promoted",
        )
        page.reload()
        assert page.inner_text("[data-testid=generation-2-status]") == "active"
        assert page.inner_text("[data-testid=generation-1-status]") == "archived"
        assert "passed" in page.inner_text("[data-testid=generation-2]")
        shot(page, "08-generations-promoted")

        # Compare the two generations side by side.
        page.goto("/kbs/papers/search/?q=insulin+resistance+trials&mode=hybrid&compare=1")
        assert "generation #2 and #1" in page.inner_text("[data-testid=overlap]")
        assert page.locator("[data-testid=results-1] [data-testid=result]").count() > 0
        shot(page, "09-search-compare")

        # Roll back, promote again, then collect.
        page.goto("/kbs/papers/generations/")
        page.click("[data-testid=rollback]")
        page.wait_for_selector("text=Rolled back: generation #1 is active.")
        assert page.inner_text("[data-testid=generation-1-status]") == "active"
        assert page.locator("[data-testid=promote-1]").is_disabled()
        page.click("[data-testid=promote-2]")
        page.wait_for_selector("text=Generation #2 is active.")
        KnowledgeBase.objects.filter(slug="papers").update(retention=0)
        page.click("[data-testid=gc]")
        page.wait_for_selector("text=Garbage collection: collected #1.")
        assert page.inner_text("[data-testid=generation-1-status]") == "collected"
        assert Generation.objects.get(knowledge_base=kb, number=1).files_deleted_at is not None
        shot(page, "10-generations-after-gc")

        # A phone's width: no sideways scrolling of the page itself.
        page.set_viewport_size({"width": 390, "height": 844})
        for url, name in [
            ("/kbs/papers/", "11-phone-kb"),
            ("/kbs/papers/generations/", "12-phone-generations"),
            ("/kbs/papers/search/?q=insulin", "13-phone-search"),
        ]:
            page.goto(url)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, (url, overflow)
            shot(page, name)

        # The API's docs: Swagger UI from the installed static files, under the CSP.
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto("/api/docs")
        expect(page.locator("#swagger-ui .info .title")).to_contain_text("RAG Studio API")
        shot(page, "15-api-docs")

        # The app's own error page.
        response = page.goto("/kbs/nope/")
        assert response.status == 404 and "404 · Not found" in page.inner_text("main")
        shot(page, "14-not-found")
    finally:
        stop_cluster(cluster)


def test_the_job_page_shows_both_counters_rising(page: Any, tmp_path: Path) -> None:
    """An embedding API on loopback answers a job's first requests, then holds the rest
    until the page has shown the job part-way: embedded and persisted above zero and
    below the total, persisted never ahead of embedded. Released, the job finishes."""
    from ingestion.embedders import get_embedder
    from knowledge_bases.services import knowledge_base_create
    from ragstudio.testing.embedding_server import EmbeddingServer

    with EmbeddingServer(dims=16) as server:
        server.hold(after=4)
        django_settings.RAGSTUDIO = {
            **django_settings.RAGSTUDIO,
            # Small batches and flushes: four answered requests are part of the job, and
            # persisted moves in steps below embedded.
            "EMBED_BATCH_SIZE": 8,
            "STORE_BATCH_SIZE": 16,
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-local",
            "EMBEDDERS_FOR_USERS": ["openai:*"],
        }
        get_embedder.cache_clear()
        knowledge_base_create(
            slug="remote",
            name="Remote",
            owner=make_user("rita"),
            embedder="openai:test-embed@16",
            chunk_size=64,
            chunk_overlap=8,
        )
        cluster = start_cluster(
            tmp_path,
            RAGSTUDIO_OPENAI_BASE_URL=server.url,
            RAGSTUDIO_OPENAI_API_KEY="sk-local",
            RAGSTUDIO_OPENAI_TIMEOUT="300",
        )
        try:
            sign_in(page, "rita")
            page.goto("/kbs/remote/")
            page.set_input_files(
                "#id_files",
                files=[
                    {"name": "long.txt", "mimeType": "text/plain", "buffer": paper("tides", 600)}
                ],
            )
            page.click("#upload-form button[type=submit]")
            page.wait_for_selector("[data-testid=upload-results]")
            page.click("[data-testid=job-link]")
            page.wait_for_selector("#job-progress")
            seen: list[tuple[int, int, int, str]] = []

            def part_way() -> bool:
                seen.append(progress_snapshot(page))
                embedded, persisted, total, status = seen[-1]
                return status == "running" and 0 < persisted <= embedded < total

            wait_for(part_way, 120, "the job page to show the job part-way")
            shot(page, "04-job-running")
            server.release()

            def finished() -> bool:
                seen.append(progress_snapshot(page))
                return seen[-1][3] in ("succeeded", "failed", "cancelled")

            wait_for(finished, 120, "the job page to show the job finished")
            embedded, persisted, total, status = seen[-1]
            assert status == "succeeded" and embedded == persisted == total, str(seen)
            assert all(p <= e for e, p, _t, _s in seen), str(seen)
        finally:
            stop_cluster(cluster)
            get_embedder.cache_clear()


def manual(interval: str) -> bytes:
    steps = [f"Step {i}: clean the machine and check container number {i}." for i in range(10)]
    steps.insert(5, f"Descale the machine every {interval} months.")
    return " ".join(steps).encode()


def test_a_user_replaces_a_document_restores_a_version_and_syncs_a_folder(
    page: Any, tmp_path: Path
) -> None:
    from ingestion.models import IngestionJob, Source
    from knowledge_bases.models import Document
    from tests.factories import make_kb

    allowed = tmp_path / "allowed"
    (allowed / "manuals").mkdir(parents=True)
    (allowed / "manuals" / "grinder.txt").write_bytes(
        b"The grinder setting changes how fast espresso flows. " * 8
    )
    django_settings.RAGSTUDIO = {**django_settings.RAGSTUDIO, "SOURCE_FOLDER_ROOTS": [allowed]}
    kb = make_kb(make_user("vera"), "coffee")
    cluster = start_cluster(tmp_path, RAGSTUDIO_SOURCE_FOLDER_ROOTS=str(allowed))

    def jobs_done() -> bool:
        return not IngestionJob.objects.filter(status__in=IngestionJob.LIVE).exists()

    def upload_manual(interval: str) -> str:
        page.goto("/kbs/coffee/")
        page.set_input_files(
            "#id_files",
            files=[{"name": "machine.txt", "mimeType": "text/plain", "buffer": manual(interval)}],
        )
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("[data-testid=upload-results]")
        return page.inner_text("[data-testid=upload-results]")

    try:
        sign_in(page, "vera")
        assert "machine.txt accepted" in upload_manual("three")
        wait_for(jobs_done, 180, "the first version to be indexed")
        results = upload_manual("two")
        assert "machine.txt: new version v2" in results, results
        shot(page, "22-new-version-uploaded")
        wait_for(jobs_done, 180, "the second version to be indexed")
        page.goto("/kbs/coffee/")
        row = page.locator("[data-testid='doc-machine.txt']")
        expect(row.locator("[data-testid=doc-version]")).to_contain_text("v2 of 2")
        row.locator("a").first.click()
        page.wait_for_selector("[data-testid=versions-table]")
        assert page.inner_text("[data-testid=serving-version]") == "v2"
        assert page.locator("[data-testid=version-1]").count() == 1
        shot(page, "23-document-versions")
        page.click("[data-testid=restore-1]")
        expect(page.locator("main")).to_contain_text("Version 1 restored as v3")
        wait_for(jobs_done, 180, "the restored version to be indexed")
        page.reload()
        assert page.inner_text("[data-testid=serving-version]") == "v3"
        assert "restored from v1" in page.inner_text("[data-testid=version-3]")
        shot(page, "24-document-restored")
        document = Document.objects.get(knowledge_base=kb, original_filename="machine.txt")
        assert (document.version, document.serving_version) == (3, 3)

        page.goto("/kbs/coffee/sources/")
        page.fill("#id_name", "manuals")
        page.select_option("#id_kind", "folder")
        page.fill("#id_location", str(allowed / "manuals"))
        page.fill("#id_schedule_minutes", "0")
        page.click("#source-form button[type=submit]")
        expect(page.locator("main")).to_contain_text("Added the source manuals")
        source = Source.objects.get(knowledge_base=kb)

        def synced(seen: int) -> bool:
            source.refresh_from_db()
            return source.status == "ok" and source.last_stats.get("seen") == seen

        wait_for(lambda: synced(1), 180, "the first sync")
        wait_for(jobs_done, 180, "the synced file to be indexed")
        page.reload()
        stats = page.inner_text("[data-testid=source-manuals] [data-testid=source-stats]")
        assert "1 seen, 1 added" in stats, stats
        shot(page, "25-source-synced")
        (allowed / "manuals" / "milk.txt").write_bytes(b"Steam the milk until it is glossy. " * 8)
        page.click("[data-testid=sync-manuals]")
        wait_for(lambda: synced(2), 180, "the second sync")
        wait_for(jobs_done, 180, "the new file to be indexed")
        page.reload()
        stats = page.inner_text("[data-testid=source-manuals] [data-testid=source-stats]")
        assert "2 seen, 1 added" in stats, stats
        assert sorted(
            Document.objects.filter(knowledge_base=kb, status="indexed").values_list(
                "original_filename", flat=True
            )
        ) == ["grinder.txt", "machine.txt", "milk.txt"]
        shot(page, "26-source-resynced")
    finally:
        stop_cluster(cluster)


def test_files_dropped_on_the_upload_zone_are_uploaded(page: Any) -> None:
    from tests.factories import make_kb

    make_kb(make_user("dora"), "dropbox")
    sign_in(page, "dora")
    page.goto("/kbs/dropbox/")
    drop = """([text, png]) => {
        const dt = new DataTransfer();
        dt.items.add(new File([text], "glacier.txt", {type: "text/plain"}));
        dt.items.add(new File([new Uint8Array(png)], "photo.gif", {type: "image/gif"}));
        const zone = document.querySelector("[data-dropzone]");
        const init = {dataTransfer: dt, bubbles: true, cancelable: true};
        zone.dispatchEvent(new DragEvent("dragover", init));
        zone.dispatchEvent(new DragEvent("drop", init));
    }"""
    png = [0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0, 0, 0, 0]  # GIF89a: a format not read
    page.evaluate(drop, ["Glaciers carve valleys over many millennia.", png])
    page.wait_for_selector("[data-testid=upload-results]")
    results = page.inner_text("[data-testid=upload-results]")
    assert "glacier.txt accepted" in results
    assert "photo.gif: unsupported file type: GIF image" in results
    assert page.locator("[data-testid='doc-glacier.txt']").count() == 1
    expect(page.locator("#id_files")).to_have_value("")  # the picker was cleared after the upload
    shot(page, "16-dropped-files")


MINI = Path(__file__).resolve().parents[1] / "data" / "scifact-mini"


def test_quality_is_measured_and_gates_a_worse_rebuild(page: Any, tmp_path: Path) -> None:
    """Evaluation sets from a file and from the playground's marks, the quality page, the
    gate refusing a worse rebuild with its numbers, the override, and the roll back."""
    import json

    from search.models import Judgement

    make_user("quinn")
    cluster = start_cluster(tmp_path)
    try:
        sign_in(page, "quinn")
        page.fill("#id_name", "Claims")
        page.fill("#id_slug", "claims")
        page.fill("#id_chunk_size", "200")
        page.fill("#id_chunk_overlap", "32")
        page.click("form.card button[type=submit]")
        page.wait_for_url("**/kbs/claims/")
        page.set_input_files("#id_files", str(MINI / "corpus.jsonl"))
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("[data-testid=upload-results]")
        kb = KnowledgeBase.objects.get(slug="claims")
        wait_for(
            lambda: KnowledgeBase.objects.filter(
                pk=kb.pk, active_generation__isnull=False
            ).exists(),
            240,
            "the first generation",
        )

        # An evaluation set from a JSON Lines file, on the quality page.
        page.goto("/kbs/claims/quality/")
        assert page.locator("[data-testid=no-evalsets]").count() == 1
        page.fill("#id_name", "claims")
        page.set_input_files("#id_file", str(MINI / "evalset.jsonl"))
        page.click("[data-testid=import]")
        expect(page.locator("main")).to_contain_text("Imported into claims: 24 queries added")

        # Three results marked relevant in the playground, building a second set.
        claims = [json.loads(line) for line in (MINI / "evalset.jsonl").read_text().splitlines()]
        page.goto("/kbs/claims/search/")
        marked = 0
        for claim in claims:
            record = claim["relevant"][0].split("#", 1)[1]
            page.fill("#id_q", claim["query"])
            page.fill("#id_set", "marked")
            page.click(".search-form button[type=submit]")
            expect(page.locator("[data-testid=results-for]")).to_contain_text(claim["query"])
            result = page.locator("[data-testid=result]", has_text=f"record {record} ")
            if result.count() == 0:
                continue  # the relevant abstract is not on the first page: mark another claim
            result.first.locator("[data-testid=mark-relevant]").click()
            expect(result.first.locator("[data-testid=mark-state]")).to_have_text(
                "relevant in marked"
            )
            marked += 1
            if marked == 1:
                shot(page, "17-playground-marking")
            if marked == 3:
                break
        assert marked == 3
        assert (
            Judgement.objects.filter(
                query__evaluation_set__name="marked", grade__gt=0, source="playground"
            ).count()
            == 3
        )

        # Evaluate the active generation on both sets.
        page.goto("/kbs/claims/quality/")
        for name in ("claims", "marked"):
            page.click(f"[data-testid=evaluate-{name}-1]")
            expect(page.locator("[data-testid=message]")).to_contain_text(f"on {name} (")
        # A worker measures them; the table follows their progress, then shows the numbers.
        for name in ("claims", "marked"):
            expect(
                page.locator(f"[data-testid=runs-{name}] [data-testid=ndcg-hybrid-1]")
            ).to_be_visible(timeout=120_000)
        hybrid = float(page.inner_text("[data-testid=runs-claims] [data-testid=ndcg-hybrid-1]"))
        assert 0.5 < hybrid <= 1.0

        # A rebuild with 16-token chunks: the gate refuses to promote it, with the numbers.
        page.goto("/kbs/claims/generations/")
        page.fill("#id_chunk_size", "16")
        page.fill("#id_chunk_overlap", "0")
        page.click("[data-testid=plan]")
        # A worker plans it; the box polls until the plan is there.
        plan = page.locator("[data-testid=rebuild-plan]")
        expect(plan).to_contain_text("chunk_size: 200 → 16", timeout=120_000)
        assert int(page.inner_text("[data-testid=plan-chunks]")) > 1000
        shot(page, "18-rebuild-plan")
        page.click("[data-testid=rebuild]")
        page.wait_for_selector("text=Rebuild started")
        wait_for(
            lambda: (
                Generation.objects.filter(
                    knowledge_base=kb, number=2, quality_passed__isnull=False
                ).exists()
                or Generation.objects.filter(knowledge_base=kb, number=2, status="failed").exists()
            ),
            300,
            "generation 2 to be checked against the quality gate",
        )
        page.reload()
        assert page.inner_text("[data-testid=generation-2-status]") == "ready"
        assert "quality regression" in page.inner_text("[data-testid=generation-2-quality]")
        quality = page.inner_text("[data-testid=generation-2-quality-report]")
        assert re.search(
            r"hybrid nDCG@10 0\.\d{3} -> 0\.\d{3} \(-0\.\d{3}, at most -0\.010\)", quality
        )
        assert page.locator("[data-testid=promote-2]").is_disabled()
        shot(page, "19-quality-gate-refused")

        # The per-query differences, with the top results side by side.
        page.goto("/kbs/claims/quality/")
        page.click("[data-testid=evaluate-claims-2]")
        expect(page.locator("[data-testid=runs-claims] [data-testid=ndcg-hybrid-2]")).to_be_visible(
            timeout=120_000
        )
        page.select_option("#cmp-set", "claims")
        page.select_option("#cmp-a", "1")
        page.select_option("#cmp-b", "2")
        page.click("[data-testid=compare]")
        worse = int(page.inner_text("[data-testid=worse-count]").split()[0])
        assert worse > 0
        page.locator("[data-testid=worse-queries] details").first.click()
        shot(page, "20-quality-compare")

        # Override with a reason, then roll back.
        page.goto("/kbs/claims/generations/")
        page.fill("[data-testid=override-reason-2]", "smaller chunks for citations")
        page.click("[data-testid=override-2]")
        page.wait_for_selector("text=Generation #2 is active.")
        assert page.inner_text("[data-testid=generation-2-status]") == "active"
        event = Generation.objects.get(knowledge_base=kb, number=2).events.get(to_status="active")
        assert event.actor.username == "quinn"
        assert event.note.endswith("override by quinn: smaller chunks for citations")
        page.click("[data-testid=rollback]")
        page.wait_for_selector("text=Rolled back: generation #1 is active.")
        assert page.inner_text("[data-testid=generation-1-status]") == "active"
        shot(page, "21-after-override-and-rollback")
    finally:
        stop_cluster(cluster)


def test_the_first_hour_an_empty_file_a_steerable_search_and_an_undoable_promote(
    page: Any,
) -> None:
    """Issue 27: one empty file among those chosen fails alone; the header follows promote
    and rollback; rollback returns to what the last promote replaced; the generations table
    fits a laptop and a phone; the search page filters, pages and cuts by score; a mark
    shows on every result of its document."""
    from ingestion.jobs import run_job_and_queue
    from knowledge_bases.models import Document
    from ragstudio.testing.generations import make_generation
    from tests.factories import make_kb

    user = make_user("erin")
    kb = make_kb(user, "daily", chunk_size=32, chunk_overlap=0)
    sign_in(page, "erin")
    page.type("#id_name", "Harbour Tides, 2026")  # the slug follows the name as it is typed
    expect(page.locator("#id_slug")).to_have_value("harbour-tides-2026")
    page.goto("/kbs/daily/")
    page.set_input_files(
        "#id_files",
        [
            {"name": "harbour.txt", "mimeType": "text/plain", "buffer": paper("harbour tides", 30)},
            {"name": "empty.txt", "mimeType": "text/plain", "buffer": b""},
            {"name": "moon.txt", "mimeType": "text/plain", "buffer": paper("moon tides", 30)},
        ],
    )
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("[data-testid=upload-results]")
    results = page.inner_text("[data-testid=upload-results]")
    assert "harbour.txt accepted" in results and "moon.txt accepted" in results
    assert "empty.txt: empty file" in results
    shot(page, "27-upload-with-an-empty-file")

    def run_queued_jobs() -> None:
        # A swap queues the documents the generation now serving lacks: index them, as
        # the worker would, before the next action (a swap waits for such a job).
        for job in kb.jobs.filter(status="queued"):
            run_job_and_queue(job.pk)

    run_queued_jobs()
    assert Document.objects.filter(knowledge_base=kb, status="indexed").count() == 2

    # Generations: #1 serves; #2 archived earlier; #3 ready. Promote #3, then #2 over it.
    make_generation(kb, Generation.Status.ARCHIVED, rows=4)
    make_generation(kb, Generation.Status.READY, rows=4)
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto("/kbs/daily/generations/")
    page.click("[data-testid=promote-3]")
    expect(page.locator("[data-testid=active-generation]")).to_have_text("#3")
    run_queued_jobs()
    page.reload()
    page.click("[data-testid=promote-2]")
    expect(page.locator("[data-testid=active-generation]")).to_have_text("#2")
    run_queued_jobs()
    page.reload()
    expect(page.locator("[data-testid=rollback]")).to_have_text("Roll back to #3")
    for testid in ("promote-1", "generation-1-quality", "rollback"):
        box = page.locator(f"[data-testid={testid}]").bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1366, (testid, box)
    shot(page, "28-generations-at-1366")
    page.click("[data-testid=rollback]")
    expect(page.locator("[data-testid=active-generation]")).to_have_text("#3")
    run_queued_jobs()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/kbs/daily/generations/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "29-generations-on-a-phone")
    page.click("[data-testid=rollback]")  # back to #1, what #3's promote replaced
    expect(page.locator("[data-testid=active-generation]")).to_have_text("#1")

    # Search: filter by a document's name, a page of 2 and the next, a minimum score.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/kbs/daily/search/")
    page.fill("#id_q", "tides study")
    page.select_option("#id_mode", "lexical")
    page.click("[data-testid=search-options] summary")
    page.fill("#id_doc", "harbour")
    page.fill("#id_limit", "2")
    page.fill("#id_set", "daily-set")
    page.click("form[role=search] button[type=submit]")
    page.wait_for_selector("[data-testid=result]")
    names = page.locator("[data-testid=result-document]").all_inner_texts()
    assert names == ["harbour"] * 2, names
    shot(page, "30-search-filtered")
    page.click("[data-testid=result] [data-testid=mark-relevant] >> nth=0")
    expect(page.locator("[data-testid=mark-state]").nth(1)).to_have_text("relevant in daily-set")
    page.click("[data-testid=next-page]")
    expect(page.locator("[data-testid=results-for]")).to_contain_text("Results from 3 for")
    assert page.locator("[data-testid=result-document]").all_inner_texts() == ["harbour"] * 2
    page.fill("#id_min_score", "1000")  # the options stay open
    page.fill("#id_doc", "")
    page.click("form[role=search] button[type=submit]")
    expect(page.locator("#search-results")).to_contain_text("No results.")
    assert "cosine similarity" in page.inner_text("[data-testid=search-options]")


def test_a_spreadsheet_is_read_as_rows_and_a_citation_opens_its_chunk(page: Any) -> None:
    """Issue 23: an Office file uploaded on the page is indexed with its structure; a
    search result cites the sheet and rows and links to that chunk on the document page,
    which shows what was read, chunk by chunk, and offers the original. An encrypted PDF
    in the same upload is opened with the password typed in the form."""
    from ingestion.jobs import run_job_and_queue
    from knowledge_bases.models import Document
    from tests.factories import make_kb
    from tests.helpers import make_locked_pdf

    docs = Path(__file__).resolve().parents[1] / "data" / "documents"
    kb = make_kb(make_user("olga"), "office", chunk_size=48, chunk_overlap=8)
    sign_in(page, "olga")
    page.goto("/kbs/office/")
    page.set_input_files(
        "#id_files",
        [
            {
                "name": name,
                "mimeType": "application/octet-stream",
                "buffer": (docs / name).read_bytes(),
            }
            for name in ("budget.xlsx", "manual.docx")
        ]
        + [
            {
                "name": "minutes.pdf",
                "mimeType": "application/pdf",
                "buffer": make_locked_pdf("Minutes of the board: the dam opens in May", "s3same"),
            }
        ],
    )
    page.fill("#id_password", "s3same")
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("[data-testid=upload-results]")
    expect(page.locator("[data-testid=upload-results]")).to_contain_text("minutes.pdf accepted")
    for job in kb.jobs.filter(status="queued"):
        run_job_and_queue(job.pk)
    assert Document.objects.get(original_filename="minutes.pdf").status == "indexed"

    page.goto("/kbs/office/search/")
    page.fill("#id_q", "Widget 37")
    page.select_option("#id_mode", "lexical")
    page.click("form.search-form button[type=submit]")
    first = page.locator("[data-testid=result]").first
    expect(first).to_contain_text("sheet Costs")
    expect(first).to_contain_text("Item | 2020 | 2021")
    cite = first.locator("[data-testid=result-citation]")
    expect(cite).to_contain_text("budget.xlsx")
    shot(page, "30-search-cites-sheet-and-rows")
    cite.click()
    page.wait_for_url(re.compile(r".*/documents/\d+/#chunk-\d+$"))
    anchor = page.url.rsplit("#", 1)[1]
    target = page.locator(f"#{anchor}")
    expect(target).to_contain_text("Widget 37 | 370 | 407")
    expect(target).to_contain_text("sheet Costs")
    assert target.evaluate("el => el.matches(':target')")
    expect(page.locator("[data-testid=chunk-place]").first).to_contain_text("Costs")
    expect(page.locator("[data-testid=document-download]")).to_be_visible()
    shot(page, "31-document-page-what-was-read")


def test_a_user_makes_a_read_only_key_sees_it_once_and_revokes_it(page: Any) -> None:
    """Issue 26: the API keys page makes a key (scope, knowledge bases, expiry), shows its
    secret once, lists when it was last used, and revokes it; the key works until then."""
    from django.test import Client

    from tests.factories import make_kb

    make_kb(make_user("kim"), "notes")
    sign_in(page, "kim")
    page.click("nav >> text=API keys")
    page.fill("#id_name", "dify app")
    page.select_option("#id_scope", "read")
    page.select_option("#id_knowledge_bases", ["notes"])
    page.fill("#id_expires_in_days", "30")
    page.click("[data-testid=create-key]")
    secret = page.inner_text("[data-testid=new-key-secret]").strip()
    assert secret.startswith("rs_")
    shot(page, "32-api-key-created")
    row = page.locator("[data-testid=keys-table] tbody tr").first
    expect(row).to_contain_text("dify app")
    expect(row).to_contain_text("read-only")
    expect(row).to_contain_text("kim~notes")
    api = Client(headers={"Authorization": f"Bearer {secret}"})
    assert [kb["slug"] for kb in api.get("/api/kbs").json()] == ["notes"]
    page.reload()  # the secret is not shown again; the use is
    expect(page.locator("[data-testid=new-key-secret]")).to_have_count(0)
    expect(row).not_to_contain_text("never used")
    page.locator("[data-testid^=revoke-]").first.click()
    expect(page.locator("[data-testid=keys-table]")).to_contain_text("revoked")
    assert api.get("/api/kbs").status_code == 401
    shot(page, "33-api-key-revoked")


def test_staff_read_the_audit_trail_and_filter_it(page: Any) -> None:
    """Issue 28: a key made on the Keys page and a failed sign-in show on the staff's Audit
    page, with who and from where; the filters narrow the list."""
    make_user("root", is_staff=True)
    make_user("kim")
    page.goto("/accounts/login/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "not-kims-password")
    page.click("button[type=submit]")
    expect(page.locator("form")).to_contain_text("enter a correct username")
    sign_in(page, "kim")
    page.click("nav >> text=API keys")
    expect(page.locator("nav")).not_to_contain_text("Audit")  # not staff
    page.fill("#id_name", "nightly export")
    page.click("[data-testid=create-key]")
    expect(page.locator("[data-testid=new-key-secret]")).to_be_visible()
    page.click("nav >> button:has-text('Log out')")
    sign_in(page, "root")
    page.click("nav >> text=Audit")
    table = page.locator("[data-testid=audit-table]")
    expect(table).to_contain_text("API key created")
    expect(table).to_contain_text("nightly export")
    expect(table).to_contain_text("sign-in failed")
    expect(table).to_contain_text("127.0.0.1")
    shot(page, "34-audit-trail")
    page.select_option("select[name=action]", "key")
    page.fill("input[name=actor]", "kim")
    page.click("[data-testid=audit-filters] button[type=submit]")
    expect(table).to_contain_text("nightly export")
    expect(table).not_to_contain_text("sign-in failed")
    expect(table.locator("tbody tr")).to_have_count(1)
    shot(page, "35-audit-trail-filtered")


def test_a_user_exports_a_kb_downloads_it_and_imports_it_again(page: Any, tmp_path: Path) -> None:
    """Issue 28: Export on the Generations tab runs in a worker, the Export / import page
    shows it finish and downloads the archive; importing that file makes a KB that
    answers searches, and a file that is not an archive is refused with the reason."""
    from ingestion.jobs import run_job_and_queue
    from tests.factories import make_kb, upload

    kb = make_kb(make_user("olga"), "notes")
    job = upload(kb, [("alpha.txt", paper("alpha", 20)), ("beta.txt", paper("beta", 20))]).job
    assert job is not None
    run_job_and_queue(job.pk)
    cluster = start_cluster(tmp_path)
    try:
        sign_in(page, "olga")
        page.goto("/kbs/notes/generations/")
        page.check("[data-testid=all-generations]")
        page.click("[data-testid=export]")
        page.wait_for_url("**/transfers/")
        expect(page.locator("#messages")).to_contain_text("Exporting Notes")
        download_link = page.locator("a[data-testid^=download-]")
        expect(download_link).to_be_visible(timeout=120_000)  # the table refreshes itself
        row = page.locator("[data-testid=transfers-table] tbody tr").first
        expect(row).to_contain_text("2 documents")
        shot(page, "36-export-done")
        with page.expect_download() as info:
            download_link.click()
        archive = tmp_path / "notes.ragkb"
        info.value.save_as(archive)
        assert archive.stat().st_size > 0

        # Something else is refused at once, with the reason.
        junk = tmp_path / "junk.ragkb"
        junk.write_bytes(b"not an archive at all")
        page.set_input_files("#id_archive", str(junk))
        page.click("[data-testid=import]")
        expect(page.locator("[data-testid=import-error]")).to_contain_text(
            "not a knowledge-base archive"
        )

        page.set_input_files("#id_archive", str(archive))
        page.fill("#id_slug", "notes-copy")
        page.click("[data-testid=import]")
        page.wait_for_url("**/transfers/")
        imported = page.locator("[data-testid=transfers-table] tbody tr", has_text="Import")
        expect(imported.locator("[data-testid=transfer-status]")).to_have_text(
            "succeeded", timeout=120_000
        )
        expect(imported).to_contain_text("0 embedded")
        shot(page, "37-import-done")
        imported.locator("a", has_text="Notes").click()
        page.wait_for_url(re.compile(r".*/kbs/(olga~)?notes-copy/$"))
        expect(page.locator("body")).to_contain_text("alpha.txt")
    finally:
        stop_cluster(cluster)
    copy = KnowledgeBase.objects.get(slug="notes-copy")
    assert copy.active_generation is not None and copy.documents.count() == 2
