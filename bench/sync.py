"""A folder source of SciFact abstracts, one text file each, synced through the real
services and jobs: the first sync, a re-sync with nothing changed, then one with 1 % of the
files edited (one sentence appended to each).

    .venv/bin/python bench/sync.py [--docs 5000] [--edited 0.01]

Prints one row per sync: seconds for the sync itself (list, compare, read, upload) and for
its job, files added / changed / unchanged, chunks embedded and reused, rows written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._django import setup

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--edited", type=float, default=0.01, help="share of files edited")
    args = parser.parse_args()
    if not args.corpus.exists():
        parser.error(f"corpus not found: {args.corpus}")
    if args.docs < 1 or not 0 < args.edited <= 1:
        parser.error("--docs must be positive and --edited in (0, 1]")
    work = setup("ragstudio-bench-sync-")
    folder = work / "data" / "sources" / "scifact"
    folder.mkdir(parents=True)
    try:
        from django.contrib.auth import get_user_model

        from ingestion.jobs import run_job_and_queue
        from ingestion.models import IngestionJob
        from ingestion.services import source_create, source_sync
        from knowledge_bases.generations import generation_store
        from knowledge_bases.services import knowledge_base_create

        with open(args.corpus) as fh:
            records = [json.loads(line) for line in itertools.islice(fh, args.docs)]
        for r in records:
            (folder / f"{r['_id']}.txt").write_text(f"{r['title']}\n\n{r['text']}\n")
        user = get_user_model().objects.create_user("bench")
        kb = knowledge_base_create(slug="sync", name="Sync", owner=user)
        source = source_create(
            kb=kb, name="scifact", kind="folder", config={"path": str(folder)}, schedule_minutes=0
        )
        rows: list[tuple[str, dict, float, IngestionJob | None, int]] = []

        def run(label: str) -> None:
            started = time.perf_counter()
            result = source_sync(source_id=source.pk, user=user, enqueue=False)
            assert result is not None
            sync_seconds = time.perf_counter() - started
            job = None
            if result.job is not None:
                started = time.perf_counter()
                run_job_and_queue(result.job.pk)
                job = IngestionJob.objects.get(pk=result.job.pk)
                job_seconds = time.perf_counter() - started
                job.bench_seconds = job_seconds  # type: ignore[attr-defined]
            kb.refresh_from_db()
            writes = generation_store(kb.active_generation).vectors.count()
            rows.append((label, result.stats(), sync_seconds, job, writes))

        run("first sync")
        run("re-sync, nothing changed")
        edited = random.Random(0).sample(
            sorted(folder.iterdir()), max(1, int(args.docs * args.edited))
        )
        for path in edited:
            with open(path, "a") as fh:
                fh.write("This abstract was revised by its authors after review.\n")
        run(f"re-sync, {len(edited)} files edited ({args.edited:.0%})")

        print(f"{args.docs:,} SciFact abstracts as files, local-fast, chunks of 96/32")
        print(
            "| sync | sync s | job s | added | changed | unchanged | embedded | reused "
            "| rows written | rows in the generation |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for label, stats, seconds, job, stored in rows:
            job_s = f"{job.bench_seconds:.1f}" if job else "-"  # type: ignore[attr-defined]
            embedded = job.embedded if job else 0
            reused = job.skipped if job else 0
            written = job.persisted if job else 0
            print(
                f"| {label} | {seconds:.1f} | {job_s} | {stats['added']} | {stats['changed']} "
                f"| {stats['unchanged']} | {embedded:,} | {reused:,} | {written:,} | {stored:,} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
