"""The rebuild plan against the rebuild it plans, through the real jobs.

    .venv/bin/python bench/plan.py [--docs 600]

SciFact abstracts (title + text), one JSON Lines file per 50 documents, ingested with the
default settings (local-fast, chunks of 200, overlap 32). Then for each rebuild setting:
the plan (dry run), then the rebuild itself, then its counters, time and size on disk next
to the plan's. Each rebuild is promoted, so the next plan can reuse its vectors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._django import scifact_files, setup

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact" / "corpus.jsonl"
SETTINGS = [
    ("unchanged", {}),
    ("chunks of 128, overlap 16", {"chunk_size": 128, "chunk_overlap": 16}),
    ("chunks of 254, overlap 32", {"chunk_size": 254, "chunk_overlap": 32}),
    ("back to 200/32", {"chunk_size": 200, "chunk_overlap": 32}),
    ("model local (the packaged build)", {"embedder": "local"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--docs", type=int, default=600)
    args = parser.parse_args()
    if not args.corpus.exists():
        parser.error(f"corpus not found: {args.corpus}")
    if args.docs < 1:
        parser.error("--docs must be positive")
    work = setup("ragstudio-bench-plan-")
    rows = []
    try:
        from django.contrib.auth import get_user_model

        from ingestion.jobs import run_job_and_queue
        from ingestion.models import IngestionJob
        from ingestion.services import IncomingFile, documents_upload
        from knowledge_bases.generations import generation_size_on_disk
        from knowledge_bases.models import Generation
        from knowledge_bases.services import (
            generation_promote,
            generation_rebuild_plan,
            generation_rebuild_start,
            knowledge_base_create,
        )

        files = [
            IncomingFile(name=name, chunks=[body])
            for name, body in scifact_files(args.corpus, args.docs)
        ]
        user = get_user_model().objects.create_user("bench", is_staff=True)
        kb = knowledge_base_create(slug="bench", name="Bench", owner=user)
        job = documents_upload(kb=kb, files=files, user=user, enqueue=False).job
        assert job is not None
        run_job_and_queue(job.pk)
        for name, options in SETTINGS:
            kb.refresh_from_db()
            plan = generation_rebuild_plan(kb=kb, user=user, **options)
            rebuild = generation_rebuild_start(kb=kb, user=user, enqueue=False, **options)
            started = time.perf_counter()
            run_job_and_queue(rebuild.pk)
            seconds = time.perf_counter() - started
            done = IngestionJob.objects.get(pk=rebuild.pk)
            generation = Generation.objects.get(pk=done.generation_id)
            if generation.status == Generation.Status.READY:
                generation_promote(kb=kb, number=generation.number, override_quality="bench")
            rows.append((name, plan, done, seconds, generation_size_on_disk(generation)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nSciFact, {args.docs} documents; the plan (dry run), then the rebuild it planned\n")
    print(
        "| rebuild | planned in | chunks plan / real | reused plan / real | to embed plan / "
        "embedded | ETA / took | disk plan / real |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, plan, done, seconds, size in rows:
        eta = "unknown" if plan.eta_seconds is None else f"{plan.eta_seconds:.0f} s"
        disk = "unknown" if plan.disk_bytes is None else f"{plan.disk_bytes / 1e6:.1f} MB"
        print(
            f"| {name} | {plan.seconds:.1f} s | {plan.chunks} / {done.total} | "
            f"{plan.reused} / {done.skipped} | {plan.to_embed} / {done.embedded} | "
            f"{eta} / {seconds:.0f} s | {disk} / {size / 1e6:.1f} MB |"
        )


if __name__ == "__main__":
    main()
