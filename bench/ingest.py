"""Ingestion benchmark: raw model throughput vs the whole pipeline on the same texts, and
the cost of persisting rows by store batch size.

    .venv/bin/python bench/ingest.py [--embedder local-fast] [--docs 600] [--rows 50000]
        [--threads 2] [--json]

Part 1 takes SciFact abstracts (title + text), chunks them with the default settings
(200 tokens, overlap 32) and measures, on exactly those chunk texts:
  - fastembed alone, in document order (what a plain loop over the model gives);
  - fastembed alone, texts sorted by length (the best the model can do);
  - the pipeline end to end with the embedder asked for (default ``local``, the packaged
    model, in token-aware batches; ``local-fast`` its fused int8 build, which the pipeline
    streams to): parse, chunk, embed, buffered writes to a real LanceDB table and tantivy
    index.
``raw_chunks_per_s`` is always the packaged model in document order, so ``ratio_vs_raw``
compares any embedder's pipeline with the plain loop over the packaged model.
Part 2 persists the same N synthetic 384-d rows through the buffered sink into LanceDB and
tantivy with store_batch_size 1 (2,000 rows only), 100, 1000 and 5000.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingestion.embedders import EmbedderConfig, build_embedder  # noqa: E402
from ingestion.embedders.local import LocalEmbedder  # noqa: E402
from ingestion.pipeline.chunk import Chunker  # noqa: E402
from ingestion.pipeline.parse import parse_document  # noqa: E402
from ingestion.pipeline.runner import PipelineConfig, run_pipeline  # noqa: E402
from ingestion.pipeline.sink import BufferedSink  # noqa: E402
from ragstudio.core.types import Chunk, EmbeddedChunk, SourceDocument  # noqa: E402
from search.stores.generation import GenerationStore  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def load_docs(path: Path, n: int) -> list[SourceDocument]:
    docs = []
    with open(path) as fh:
        for i, line in enumerate(itertools.islice(fh, n)):
            record = json.loads(line)
            body = json.dumps(
                {"id": record["_id"], "title": record["title"], "text": record["text"]}
            )
            docs.append(
                SourceDocument(
                    id=i + 1, filename=f"{record['_id']}.jsonl", read=lambda b=body: b.encode()
                )
            )
    return docs


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_model(embedder: LocalEmbedder, texts: list[str], *, sort: bool, batch: int = 32) -> float:
    order = (
        sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
    )
    model = embedder._model  # fastembed's TextEmbedding: the model alone, no pipeline
    started = time.perf_counter()
    list(model.embed([texts[i] for i in order], batch_size=batch))
    return len(texts) / (time.perf_counter() - started)


def part1(args: argparse.Namespace, work: Path) -> dict:
    packaged = LocalEmbedder.bundled(work / "models", threads=args.threads)
    embedder = build_embedder(
        args.embedder, EmbedderConfig(model_dir=work / "models", threads=args.threads)
    )
    docs = load_docs(args.corpus, args.docs)
    chunker = Chunker(packaged.tokenizer, size=200, overlap=32)
    started = time.perf_counter()
    chunks: list[Chunk] = []
    for doc in docs:
        chunks.extend(chunker.chunk(doc.id, parse_document(doc.read(), doc.filename)))
    prep = time.perf_counter() - started
    texts = [c.text for c in chunks]
    packaged.embed_batch(texts[:32])  # warm-up
    embedder.embed_batch(texts[:32])
    raw = bench_model(packaged, texts, sort=False)
    raw_sorted = bench_model(packaged, texts, sort=True)
    store = GenerationStore(
        lancedb_uri=str(work / "p1" / "lancedb"),
        table_name="bench",
        bm25_path=work / "p1" / "bm25",
        dimensions=384,
    )
    started = time.perf_counter()
    result = run_pipeline(
        documents=docs,
        embedder=embedder,
        store=store,
        chunker=chunker,
        config=PipelineConfig(store_batch_size=5000, embed_batch_size=32),
    )
    seconds = time.perf_counter() - started
    assert result.persisted == len(chunks) == store.vectors.count() == store.bm25.count()
    tokens = np.asarray([c.token_count for c in chunks])
    return {
        "embedder": args.embedder,
        "documents": len(docs),
        "chunks": len(chunks),
        "tokens_mean": float(tokens.mean()),
        "tokens_p50": float(np.median(tokens)),
        "parse_chunk_seconds": prep,
        "raw_chunks_per_s": raw,
        "raw_sorted_chunks_per_s": raw_sorted,
        "pipeline_seconds": seconds,
        "pipeline_chunks_per_s": len(chunks) / seconds,
        "ratio_vs_raw": len(chunks) / seconds / raw,
        "ratio_vs_raw_sorted": len(chunks) / seconds / raw_sorted,
        "lancedb_writes": result.writes,
    }


def part2(args: argparse.Namespace, work: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    words = [
        "protein",
        "cell",
        "gene",
        "expression",
        "tumor",
        "immune",
        "response",
        "patient",
        "clinical",
        "trial",
    ]
    rows_all = []
    for i in range(args.rows):
        text = " ".join(rng.choice(words, 30))
        vec = rng.normal(size=384).astype(np.float32)
        chunk = Chunk(
            id=f"{i:032x}",
            document_id=i // 10,
            ordinal=i % 10,
            text=text,
            content_hash=f"{i:032x}",
            token_count=30,
            title="bench",
        )
        # new=True: fresh rows, as the pipeline marks what it just embedded (appends).
        rows_all.append(EmbeddedChunk(chunk, vec / np.linalg.norm(vec), new=True))
    upserts = [EmbeddedChunk(r.chunk, r.vector, new=False) for r in rows_all]
    table = []
    cases = [
        (1, min(2000, args.rows), "append"),
        (100, args.rows, "append"),
        (1000, args.rows, "append"),
        (5000, args.rows, "append"),
        (1000, args.rows, "upsert"),
        (5000, args.rows, "upsert"),
    ]
    for batch_size, n, mode in cases:
        source = rows_all if mode == "append" else upserts
        target = work / f"p2-{batch_size}-{mode}"
        store = GenerationStore(
            lancedb_uri=str(target / "lancedb"),
            table_name="bench",
            bm25_path=target / "bm25",
            dimensions=384,
        )
        started = time.perf_counter()
        with BufferedSink(store, batch_size=batch_size) as sink:
            for start in range(0, n, 32):  # as the embedder hands them over
                sink.put(source[start : min(start + 32, n)])
        seconds = time.perf_counter() - started
        assert store.vectors.count() == n, (batch_size, n, store.vectors.count(), sink.writes)
        table.append(
            {
                "store_batch_size": batch_size,
                "mode": mode,
                "rows": n,
                "writes": sink.writes,
                "seconds": seconds,
                "rows_per_s": n / seconds,
                "lancedb_mb": dir_size(target / "lancedb") / 1e6,
                "bm25_mb": dir_size(target / "bm25") / 1e6,
            }
        )
        shutil.rmtree(target)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--embedder", default="local-fast", choices=["local", "local-fast"])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--skip-persist", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.corpus.exists():
        parser.error(f"corpus not found: {args.corpus}")
    work = Path(tempfile.mkdtemp(prefix="ragstudio-bench-"))
    try:
        p1 = part1(args, work)
        p2 = [] if args.skip_persist else part2(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"throughput": p1, "persist": p2}, indent=2))
        return
    print(
        f"\nSciFact: {p1['documents']} documents -> {p1['chunks']} chunks "
        f"(tokens mean {p1['tokens_mean']:.0f}, median {p1['tokens_p50']:.0f}); "
        f"{args.threads} threads, batch 32"
    )
    print("| measure | chunks/s | vs raw | vs raw sorted |")
    print("|---|---|---|---|")
    print(f"| fastembed alone, document order | {p1['raw_chunks_per_s']:.1f} | 1.00 | |")
    print(
        f"| fastembed alone, sorted by length | {p1['raw_sorted_chunks_per_s']:.1f} | "
        f"{p1['raw_sorted_chunks_per_s'] / p1['raw_chunks_per_s']:.2f} | 1.00 |"
    )
    print(
        f"| pipeline end to end with {p1['embedder']} (parse, chunk, embed, LanceDB + tantivy) | "
        f"{p1['pipeline_chunks_per_s']:.1f} | {p1['ratio_vs_raw']:.2f} | {p1['ratio_vs_raw_sorted']:.2f} |"
    )
    print(
        f"(parse + chunk alone: {p1['parse_chunk_seconds']:.2f} s; pipeline {p1['pipeline_seconds']:.1f} s, "
        f"{p1['lancedb_writes']} LanceDB write(s))"
    )
    if p2:
        print(
            "\nPersisting rows through the buffered sink (LanceDB merge_insert + tantivy commit per flush)"
        )
        print(
            "| store_batch_size | write | rows | writes | seconds | rows/s | LanceDB MB | tantivy MB |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in p2:
            print(
                f"| {r['store_batch_size']} | {r['mode']} | {r['rows']:,} | {r['writes']:,} | {r['seconds']:.1f} | "
                f"{r['rows_per_s']:,.0f} | {r['lancedb_mb']:.1f} | {r['bm25_mb']:.1f} |"
            )


if __name__ == "__main__":
    main()
