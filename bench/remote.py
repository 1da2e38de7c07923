"""Remote embedding under a rate limit nobody told us about.

    .venv/bin/python bench/remote.py [--chunks 20000] [--latency 0.2] [--limit 20] [--json]

A loopback stand-in for an OpenAI-compatible API (ragstudio/testing/embedding_server.py,
in a process of its own) answers each request after ``--latency`` seconds and answers 429 at once to requests
beyond ``--limit`` a second (with Retry-After; the last row without it). The whole
pipeline (chunking, embedding, LanceDB + tantivy writes) ingests ``--chunks`` short
chunks with: one request at a time, 4 and 16 fixed in flight (batches of 32 texts), and
the adaptive throttle (AIMD on concurrency and batch size, at most 16 in flight and 256
texts a request). Prints chunks/s, requests, 429s and the throttle's final state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingestion.embedders.openai_compat import OpenAICompatibleEmbedder  # noqa: E402
from ingestion.pipeline.chunk import Chunker  # noqa: E402
from ingestion.pipeline.runner import PipelineConfig, run_pipeline  # noqa: E402
from ragstudio.core.types import SourceDocument  # noqa: E402
from search.stores.generation import GenerationStore  # noqa: E402

DIMS = 64
RECORDS_PER_DOCUMENT = 1000
TOPICS = ["protein", "cell", "gene", "tumor", "immune", "patient", "dose", "trial", "risk"]

RUNS = [
    # name, max in flight, adaptive, Retry-After sent
    ("concurrency 1", 1, False, True),
    ("fixed 4", 4, False, True),
    ("fixed 16", 16, False, True),
    ("adaptive", 16, True, True),
    ("adaptive, no Retry-After", 16, True, False),
]


def documents(chunks: int) -> list[SourceDocument]:
    docs = []
    for d in range(0, chunks, RECORDS_PER_DOCUMENT):
        lines = [
            json.dumps(
                {
                    "id": str(i),
                    "text": f"Record {i}: the {TOPICS[i % len(TOPICS)]} study number {i * 7} "
                    f"reports finding {i % 13} about {TOPICS[(i * 5) % len(TOPICS)]}.",
                }
            )
            for i in range(d, min(d + RECORDS_PER_DOCUMENT, chunks))
        ]
        body = "\n".join(lines).encode()
        docs.append(
            SourceDocument(
                id=d // RECORDS_PER_DOCUMENT + 1, filename=f"d{d}.jsonl", read=lambda b=body: b
            )
        )
    return docs


@contextlib.contextmanager
def provider(args: argparse.Namespace, retry_after: bool) -> Iterator[str]:
    """The stand-in API in a process of its own (a real provider does not share our CPU):
    its base URL; GET on it answers its counters."""
    command = [
        sys.executable,
        "-m",
        "ragstudio.testing.embedding_server",
        f"--dims={DIMS}",
        f"--latency={args.latency}",
        f"--requests-per-s={args.limit}",
    ]
    if not retry_after:
        command.append("--no-retry-after")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(
    name: str,
    in_flight: int,
    adaptive: bool,
    retry_after: bool,
    args: argparse.Namespace,
    work: Path,
) -> dict:
    with provider(args, retry_after) as url:
        embedder = OpenAICompatibleEmbedder(
            model="bench-embed",
            base_url=url,
            dimensions=DIMS,
            max_concurrency=in_flight,
            adaptive=adaptive,
            start_batch_items=32,
            max_batch_items=256 if adaptive else 32,
        )
        store = GenerationStore(
            lancedb_uri=str(work / name / "lancedb"),
            table_name="bench",
            bm25_path=work / name / "bm25",
            dimensions=DIMS,
        )
        started = time.perf_counter()
        result = run_pipeline(
            documents=documents(args.chunks),
            embedder=embedder,
            store=store,
            chunker=Chunker(embedder.tokenizer, size=200, overlap=0),
            config=PipelineConfig(store_batch_size=5000),
        )
        seconds = time.perf_counter() - started
        stats = embedder.throttle_stats() or {}
        with urllib.request.urlopen(url) as response:
            server = json.load(response)
    return {
        "run": name,
        "chunks": result.chunks,
        "persisted": result.persisted,
        "failed_documents": len(result.failed),
        "seconds": round(seconds, 2),
        "chunks_per_s": round(result.persisted / seconds, 1),
        "requests": server["count"],
        "http_429": server["throttled"],
        "http_429_pct": round(100 * server["throttled"] / max(server["count"], 1), 2),
        "max_in_flight": server["max_in_flight"],
        "final_concurrency": stats.get("concurrency"),
        "final_batch_items": stats.get("batch_items"),
        "throttle_events": stats.get("throttle_events"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=20, help="hidden limit, requests/s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.chunks < 1 or args.latency < 0 or args.limit < 1:
        parser.error("--chunks and --limit must be positive, --latency >= 0")
    work = Path(tempfile.mkdtemp(prefix="ragstudio-remote-"))
    try:
        rows = [run(*spec, args, work) for spec in RUNS]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0]["chunks_per_s"]
    best_fixed = max(r["chunks_per_s"] for r in rows if not r["run"].startswith("adaptive"))
    for r in rows:
        r["vs_concurrency_1"] = round(r["chunks_per_s"] / base, 2)
        r["vs_best_fixed"] = round(r["chunks_per_s"] / best_fixed, 2)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"\n{args.chunks:,} short chunks, {args.latency * 1000:.0f} ms a request, hidden limit "
        f"{args.limit} requests/s\n"
    )
    print(
        "| run | chunks/s | vs concurrency 1 | vs best fixed | requests | 429s | 429 % "
        "| max in flight | final in flight x batch | throttle events |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        final = (
            f"{r['final_concurrency']} x {r['final_batch_items']}" if r["final_concurrency"] else ""
        )
        print(
            f"| {r['run']} | {r['chunks_per_s']:,.0f} | {r['vs_concurrency_1']:.2f} | "
            f"{r['vs_best_fixed']:.2f} | {r['requests']} | {r['http_429']} | "
            f"{r['http_429_pct']:.2f} | {r['max_in_flight']} | {final} | "
            f"{r['throttle_events'] or 0} |"
        )
    failed = [r["run"] for r in rows if r["failed_documents"]]
    if failed:
        print(f"\ndocuments failed (retries ran out) in: {', '.join(failed)}")


if __name__ == "__main__":
    main()
