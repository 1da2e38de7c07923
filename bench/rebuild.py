"""First build vs rebuild of an unchanged knowledge base, through the real jobs
(upload -> ingest job -> generation 1; rebuild job -> generation 2 with vector reuse).

    .venv/bin/python bench/rebuild.py [--docs 300] [--chunk-size 200]

SciFact abstracts (title + text), one JSON Lines file per 50 documents.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._django import corpus_args, scifact_kb, setup


def main() -> None:
    args = corpus_args(__doc__ or "", 300)
    work = setup("ragstudio-bench-rebuild-")
    try:
        from ingestion.jobs import run_job_and_queue
        from ingestion.models import IngestionJob
        from knowledge_bases.services import generation_rebuild_start

        kb, user, first, first_s = scifact_kb(args, "bench")

        rebuild = generation_rebuild_start(kb=kb, user=user, auto_promote=True, enqueue=False)
        started = time.perf_counter()
        run_job_and_queue(rebuild.pk)
        rebuild_s = time.perf_counter() - started
        second = IngestionJob.objects.get(pk=rebuild.pk)
        kb.refresh_from_db()
        promoted = kb.active_generation.number
        check = kb.active_generation.check_passed
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nSciFact, {args.docs} documents -> {first.total} chunks ({args.chunk_size}-token chunks), "
        "local model, 5000-row flushes"
    )
    print("| build | seconds | chunks | embedded | reused | persisted | chunks/s |")
    print("|---|---|---|---|---|---|---|")
    for name, j, s in (
        ("first build (generation 1)", first, first_s),
        ("rebuild, unchanged (generation 2)", second, rebuild_s),
    ):
        print(
            f"| {name} | {s:.1f} | {j.total} | {j.embedded} | {j.skipped} | {j.persisted} | {j.total / s:.0f} |"
        )
    print(
        f"\nrebuild is {first_s / rebuild_s:.0f}x faster than the first build; "
        f"generation {promoted} active after its check (passed: {check})"
    )


if __name__ == "__main__":
    main()
