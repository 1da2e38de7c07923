"""Peak memory of a worker running one ingestion job, at 10,000 and 100,000 chunks.

    .venv/bin/python bench/memory.py [--sizes 10000 100000] [--json]

Synthetic documents (100 chunks of 64 tokens each) go through the real services: upload,
an ingest job run by a separate worker process (`run_job_and_queue`, what a django-q2
worker calls), LanceDB and tantivy in a throwaway data directory. Embeddings come from an
OpenAI-compatible stand-in on 127.0.0.1 that answers at once, so the model is not the
bottleneck and the numbers are the pipeline's own. The worker reports its peak resident
set (VmHWM) after the job; streaming documents in windows should keep it flat in the job's
size (target: 100k chunks under 2 GiB and within 1.5x of 10k).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._django import ROOT, setup

CHUNKS_PER_DOC = 100
CHUNK_TOKENS = 64
DIMS = 64
WORDS = [
    "cell",
    "protein",
    "signal",
    "membrane",
    "enzyme",
    "river",
    "glacier",
    "volcano",
    "magma",
    "tide",
    "orbit",
    "planet",
    "neuron",
    "synapse",
    "kinase",
    "pathway",
    "catalyst",
    "crystal",
    "mineral",
    "forest",
    "climate",
    "ocean",
    "current",
    "market",
    "price",
    "policy",
    "theory",
    "model",
    "data",
    "sample",
    "trial",
    "effect",
    "dose",
    "patient",
    "gene",
]

WORKER = """
import django, json, os, sys, time
django.setup()
from django.conf import settings
from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.generations import generation_store

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0

job_id = int(sys.argv[1])
min_rows = settings.RAGSTUDIO["ANN_MIN_ROWS"]
# The pipeline first, then the vector index the job builds at its end, measured apart:
# the index is built over the whole table, so its memory follows the table, not the job.
settings.RAGSTUDIO = {**settings.RAGSTUDIO, "ANN_MIN_ROWS": 10**9}
before = rss("VmRSS")
started = time.perf_counter()
run_job_and_queue(job_id)
seconds = time.perf_counter() - started
pipeline_peak = rss("VmHWM")
job = IngestionJob.objects.get(pk=job_id)
started = time.perf_counter()
index = generation_store(job.generation).vectors.ensure_vector_index(min_rows=min_rows)
index_seconds = time.perf_counter() - started
print(json.dumps({"status": job.status, "total": job.total, "persisted": job.persisted,
                  "seconds": seconds, "rss_before": before, "peak_rss": pipeline_peak,
                  "index": index, "index_seconds": index_seconds,
                  "peak_with_index": rss("VmHWM"), "error": job.error_message}))
"""


def documents(n_docs: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        sentences = []
        for s in range(CHUNKS_PER_DOC * 4):  # ~4 sentences of ~12 tokens a chunk of 64
            words = " ".join(rng.choice(WORDS) for _ in range(9))
            sentences.append(f"Record {d}.{s} {words}.")
        docs.append((f"doc-{seed}-{d}.txt", " ".join(sentences).encode()))
    return docs


def run_size(chunks: int, server_url: str, env: dict[str, str]) -> dict:
    from django.contrib.auth import get_user_model

    from ingestion.services import IncomingFile, documents_upload
    from knowledge_bases.services import knowledge_base_create

    n_docs = max(1, chunks // CHUNKS_PER_DOC)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    kb = knowledge_base_create(
        slug=f"mem-{chunks}",
        name=f"Memory {chunks}",
        owner=user,
        embedder=f"openai:bench-embed@{DIMS}",
        chunk_size=CHUNK_TOKENS,
        chunk_overlap=0,
    )
    files = [IncomingFile(name=n, chunks=[b]) for n, b in documents(n_docs, chunks)]
    job = documents_upload(kb=kb, files=files, user=user, enqueue=False, embed_batch_size=256).job
    assert job is not None
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(job.pk)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["documents"] = n_docs
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if any(not 1_000 <= s <= 1_000_000 for s in args.sizes):
        parser.error("--sizes must be between 1000 and 1000000 chunks")
    from ragstudio.testing.embedding_server import EmbeddingServer

    with EmbeddingServer(dims=DIMS, keep_requests=False) as server:
        os.environ["RAGSTUDIO_OPENAI_BASE_URL"] = server.url
        os.environ["RAGSTUDIO_OPENAI_API_KEY"] = "bench"
        work = setup("ragstudio-bench-memory-")
        # As `manage.py serve` starts its workers (see start_cluster there).
        env = {"MALLOC_ARENA_MAX": "2", **os.environ, "RAGSTUDIO_LOG_LEVEL": "WARNING"}
        try:
            rows = []
            for size in args.sizes:
                started = time.perf_counter()
                row = run_size(size, server.url, env)
                row["wall_seconds"] = time.perf_counter() - started
                row["chunks"] = size
                rows.append(row)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        requests = server.count
    if args.json:
        print(json.dumps({"rows": rows, "requests": requests}, indent=2))
        return
    mib = 1024 * 1024
    print(f"Worker peak memory per job (stand-in embeddings, {DIMS} dims, 127.0.0.1)\n")
    print(
        "| chunks | documents | job status | stored | job s | chunks/s | RSS before job MiB "
        "| peak RSS, pipeline MiB | vector index | index s | peak RSS with index MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['chunks']:,} | {r['documents']:,} | {r['status']} | {r['persisted']:,} | "
            f"{r['seconds']:.1f} | {r['persisted'] / r['seconds']:,.0f} | "
            f"{r['rss_before'] / mib:.0f} | {r['peak_rss'] / mib:.0f} | {r['index']} | "
            f"{r['index_seconds']:.1f} | {r['peak_with_index'] / mib:.0f} |"
        )
    if len(rows) >= 2:
        ratio = rows[-1]["peak_rss"] / rows[0]["peak_rss"]
        print(
            f"\npipeline peak at {rows[-1]['chunks']:,} chunks = {ratio:.2f}x the peak at "
            f"{rows[0]['chunks']:,} (target <= 1.5x); under 2 GiB with the index build: "
            f"{rows[-1]['peak_with_index'] < 2 * 1024 * mib}"
        )


if __name__ == "__main__":
    main()
