"""Retrieval quality on a BEIR-style dataset, through the real pipeline and engines.

    .venv/bin/python bench/quality.py [--embedder NAME] [--dataset DIR] [--json]
        [--queries N] [--fresh]

DIR holds corpus.jsonl (_id, title, text), queries.jsonl (_id, text) and qrels.tsv
(query-id, corpus-id, score; header first); default ../shared/datasets/scifact. The corpus
is uploaded as JSON Lines files into a knowledge base and ingested by a real job (parse,
chunk, embed with the KB's model, LanceDB + tantivy). The built data directory is kept in
bench/.cache/ under a key of the corpus and settings, so a re-run skips the model and
takes seconds (--fresh rebuilds it).

Per query, the vector and BM25 engines each return a pool of chunks, exactly as a search
request with a deep page does; hybrid fuses the same two pools with each fusion method at
its default parameters (nothing is tuned on these queries). Scores are document-level: a
document's rank is that of its best chunk. nDCG@10 with graded gains, recall@100.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET = ROOT.parent / "shared" / "datasets" / "scifact"
CACHE = ROOT / "bench" / ".cache"
POOL = 300  # chunks per engine: enough for 100 distinct documents
FILE_RECORDS = 500


def load_dataset(directory: Path, limit: int | None) -> tuple[list[dict], dict[str, str], dict]:
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        if not (directory / name).is_file():
            raise SystemExit(f"error: {directory / name} not found")
    with open(directory / "corpus.jsonl", encoding="utf-8") as fh:
        corpus = [json.loads(line) for line in fh if line.strip()]
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(directory / "qrels.tsv", encoding="utf-8") as fh:
        next(fh, None)
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3 and int(parts[2]) > 0:
                qrels[parts[0]][parts[1]] = int(parts[2])
    queries: dict[str, str] = {}
    with open(directory / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                q = json.loads(line)
                if str(q["_id"]) in qrels:
                    queries[str(q["_id"])] = q["text"]
    if limit:
        queries = dict(list(queries.items())[:limit])
    return corpus, queries, qrels


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int = 100) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def documents_of(chunk_ids: list[str], record_of: dict[str, str]) -> list[str]:
    seen: dict[str, None] = {}
    for chunk_id in chunk_ids:
        record = record_of.get(chunk_id)
        if record is not None and record not in seen:
            seen[record] = None
    return list(seen)


def build(work: Path, corpus: list[dict], chunk_size: int, embedder: str) -> float:
    """Ingest the corpus into KB 'quality' through a real job; seconds taken."""
    from django.contrib.auth import get_user_model

    from ingestion.jobs import run_job_and_queue
    from ingestion.models import IngestionJob
    from ingestion.services import IncomingFile, documents_upload
    from knowledge_bases.services import knowledge_base_create

    files = []
    for i in range(0, len(corpus), FILE_RECORDS):
        body = "\n".join(
            json.dumps({"id": str(r["_id"]), "title": r.get("title", ""), "text": r["text"]})
            for r in corpus[i : i + FILE_RECORDS]
        )
        files.append(
            IncomingFile(name=f"corpus-{i // FILE_RECORDS:03d}.jsonl", chunks=[body.encode()])
        )
    user = get_user_model().objects.create_user("bench")
    kb = knowledge_base_create(
        slug="quality", name="Quality", owner=user, chunk_size=chunk_size, embedder=embedder
    )
    job = documents_upload(kb=kb, files=files, user=user, enqueue=False).job
    assert job is not None
    started = time.perf_counter()
    run_job_and_queue(job.pk)
    job = IngestionJob.objects.get(pk=job.pk)
    if job.status != IngestionJob.Status.SUCCEEDED:
        raise SystemExit(f"error: ingestion {job.status}: {job.error_message}")
    print(
        f"ingested {len(corpus)} documents -> {job.total} chunks in "
        f"{time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--embedder",
        default="local-fast",
        help="embedder spec of the knowledge base (local-fast, the default for new ones)",
    )
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--queries", type=int, default=0, help="only the first N queries")
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached index")
    args = parser.parse_args()
    if args.queries < 0 or not 16 <= args.chunk_size <= 8000:
        parser.error("--queries must be >= 0 and --chunk-size within 16..8000")
    corpus, queries, qrels = load_dataset(args.dataset, args.queries or None)

    digest = hashlib.sha256((args.dataset / "corpus.jsonl").read_bytes()).hexdigest()[:16]
    embedder_key = "".join(c if c.isalnum() or c in "-." else "_" for c in args.embedder)
    work = CACHE / f"quality-{digest}-c{args.chunk_size}-{embedder_key}"
    if args.fresh and work.exists():
        import shutil

        shutil.rmtree(work)
    fresh = not (work / "data" / "db.sqlite3").exists()
    os.environ["RAGSTUDIO_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragstudio.settings")
    os.environ.setdefault("RAGSTUDIO_LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from knowledge_bases.models import KnowledgeBase

    ingest_s = 0.0
    if fresh or not KnowledgeBase.objects.filter(slug="quality").exists():
        ingest_s = build(work, corpus, args.chunk_size, args.embedder)
    results = evaluate(queries, qrels)
    if args.json:
        print(json.dumps(results["scores"], indent=2))
        return
    print_table(results, args, len(corpus), ingest_s)


def evaluate(queries: dict[str, str], qrels: dict) -> dict:
    from knowledge_bases.engines import generation_store
    from knowledge_bases.models import KnowledgeBase
    from search.fusion import FusionParams, fuse
    from search.results import SearchParams
    from search.services import lexical_ranking, vector_ranking

    kb = KnowledgeBase.objects.get(slug="quality")
    generation = kb.active_generation
    store = generation_store(generation)
    rows = store.vectors.rows(columns=["id", "document_id", "record_id"])
    record_of = {r["id"]: r["record_id"] for r in rows}
    methods = {
        "hybrid": FusionParams("rrf"),
        "hybrid_weighted": FusionParams("weighted"),
        "hybrid_adaptive": FusionParams("adaptive"),
    }
    per_mode: dict[str, list[tuple[float, float]]] = defaultdict(list)
    started = time.perf_counter()
    for qid, text in queries.items():
        params = SearchParams(query=text, limit=POOL)
        timings: dict[str, float] = {}
        vector, _exact = vector_ranking(generation, store, params, POOL, timings)
        lexical = lexical_ranking(store, params, POOL, timings)
        rankings = {
            "vector": [i for i, _ in vector],
            "lexical": [i for i, _ in lexical],
        }
        for name, fusion in methods.items():
            rankings[name] = [h.chunk_id for h in fuse(vector, lexical, fusion)]
        for name, chunk_ids in rankings.items():
            docs = documents_of(chunk_ids, record_of)
            per_mode[name].append((ndcg_at(docs, qrels[qid]), recall_at(docs, qrels[qid])))
    seconds = time.perf_counter() - started
    scores = {
        name: {
            "ndcg@10": round(sum(n for n, _ in values) / len(values), 4),
            "recall@100": round(sum(r for _, r in values) / len(values), 4),
        }
        for name, values in per_mode.items()
    }
    return {"scores": scores, "queries": len(queries), "seconds": seconds, "chunks": len(rows)}


def print_table(results: dict, args: argparse.Namespace, documents: int, ingest_s: float) -> None:
    scores = results["scores"]
    best_single = max(scores["vector"]["ndcg@10"], scores["lexical"]["ndcg@10"])
    print(
        f"\n{args.dataset.name} with {args.embedder}: {documents} documents -> {results['chunks']} chunks, "
        f"{results['queries']} queries with judgements; "
        + (f"index built in {ingest_s:.0f} s" if ingest_s else "cached index")
        + f"; queries took {results['seconds']:.1f} s\n"
    )
    print("| mode | nDCG@10 | recall@100 | nDCG@10 vs best single mode |")
    print("|---|---|---|---|")
    for name, s in scores.items():
        delta = s["ndcg@10"] - best_single
        vs = f"{delta:+.4f}" if name.startswith("hybrid") else ""
        print(f"| {name} | {s['ndcg@10']:.4f} | {s['recall@100']:.4f} | {vs} |")


if __name__ == "__main__":
    main()
