"""Django in a throwaway data directory, for benchmarks that go through the services."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def setup(prefix: str) -> Path:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["RAGSTUDIO_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragstudio.settings")
    os.environ.setdefault("RAGSTUDIO_LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return work


def scifact_files(corpus: Path, docs: int, per_file: int = 50) -> list[tuple[str, bytes]]:
    """The first ``docs`` SciFact abstracts (title and text) as JSON Lines files of
    ``per_file`` records: (file name, body)."""
    with open(corpus) as fh:
        records = [json.loads(line) for line in itertools.islice(fh, docs)]
    return [
        (
            f"scifact-{i // per_file}.jsonl",
            "\n".join(
                json.dumps({"id": r["_id"], "title": r["title"], "text": r["text"]})
                for r in records[i : i + per_file]
            ).encode(),
        )
        for i in range(0, len(records), per_file)
    ]


def corpus_args(description: str, docs: int, **extra: dict[str, Any]) -> argparse.Namespace:
    """--corpus, --docs and --chunk-size (and ``extra``: flag -> add_argument keywords),
    checked."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=SCIFACT)
    parser.add_argument("--docs", type=int, default=docs)
    parser.add_argument("--chunk-size", type=int, default=200)
    for flag, options in extra.items():
        parser.add_argument(flag, **options)
    args = parser.parse_args()
    if not args.corpus.exists():
        parser.error(f"corpus not found: {args.corpus}")
    if args.docs < 1:
        parser.error("--docs must be positive")
    return args


def scifact_kb(args: argparse.Namespace, slug: str) -> tuple[Any, Any, Any, float]:
    """A KB built from SciFact through the real ingest job (after ``setup``): (the KB, its
    owner, the finished job, the job's seconds; the model is loaded before the clock)."""
    from django.contrib.auth import get_user_model

    from ingestion.jobs import run_job_and_queue
    from ingestion.models import IngestionJob
    from ingestion.services import IncomingFile, documents_upload
    from knowledge_bases.generations import embedder_get
    from knowledge_bases.services import knowledge_base_create

    files = [
        IncomingFile(name=name, chunks=[body])
        for name, body in scifact_files(args.corpus, args.docs)
    ]
    user = get_user_model().objects.create_user("bench")
    kb = knowledge_base_create(slug=slug, name=slug.title(), owner=user, chunk_size=args.chunk_size)
    embedder_get(kb.embedder)
    job = documents_upload(kb=kb, files=files, user=user, enqueue=False).job
    assert job is not None
    started = time.perf_counter()
    run_job_and_queue(job.pk)
    seconds = time.perf_counter() - started
    kb.refresh_from_db()
    return kb, user, IngestionJob.objects.get(pk=job.pk), seconds
