"""Retrieval quality on a BEIR-style dataset, through the real pipeline and engines.

    .venv/bin/python bench/quality.py [--embedder NAME] [--dataset DIR] [--json]
        [--queries N] [--fresh]

DIR holds corpus.jsonl (_id, title, text), queries.jsonl (_id, text) and qrels.tsv
(query-id, corpus-id, score; header first); default ../shared/datasets/scifact. The corpus
is uploaded as JSON Lines files into a knowledge base and ingested by a real job (parse,
chunk, embed with the KB's model, LanceDB + tantivy). The built data directory is kept in
bench/.cache/ under a key of the corpus and settings, so a re-run skips the model and
takes seconds (--fresh rebuilds it).

Per query, each mode ranks chunks exactly as a search request with a deep page does
(search.services.ranked_hits: passage-aware BM25, hybrid fused by each method at its
default parameters). Scores are record-level (a corpus entry's rank is that of its best
chunk), computed by the metric functions evaluation sets use: nDCG@10 with graded gains,
recall@10, recall@100, MRR.

The queries are split for tuning, fixed by query id: a query belongs to the tuning half
when the first byte of sha256(id) is below 128, to the report half otherwise (SciFact
train: 396 and 413 queries). Defaults (fusion, weights, title boost, chunk size) are chosen
on the tuning half only; the report half says how they hold. ``--tune`` prints the grid
of z-score fusion weights on the tuning half alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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


def tuning_half(query_id: str) -> bool:
    """The fixed split: the tuning half, or (False) the report half."""
    return hashlib.sha256(query_id.encode()).digest()[0] < 128


def documents_of(chunk_ids: list[str], record_of: dict[str, str]) -> list[str]:
    seen: dict[str, None] = {}
    for chunk_id in chunk_ids:
        record = record_of.get(chunk_id)
        if record is not None and record not in seen:
            seen[record] = None
    return list(seen)


def build(
    work: Path, corpus: list[dict], chunk_size: int, embedder: str, chunk_overlap: int
) -> float:
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
        slug="quality",
        name="Quality",
        owner=user,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        embedder=embedder,
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
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="tokens (default: a new KB's default)"
    )
    parser.add_argument(
        "--chunk-overlap", type=int, default=None, help="tokens (default: a new KB's default)"
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated modes to score (default: all of " + ", ".join(MODES) + ")",
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached index")
    parser.add_argument(
        "--tune", action="store_true", help="print the fusion grid on the tuning half only"
    )
    args = parser.parse_args()
    from ragstudio.core.bounds import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE

    if args.chunk_size is None:
        args.chunk_size = DEFAULT_CHUNK_SIZE
    if args.chunk_overlap is None:
        args.chunk_overlap = min(DEFAULT_CHUNK_OVERLAP, args.chunk_size // 2)
    if args.queries < 0 or not 16 <= args.chunk_size <= 8000:
        parser.error("--queries must be >= 0 and --chunk-size within 16..8000")
    if args.chunk_overlap is not None and not 0 <= args.chunk_overlap <= args.chunk_size // 2:
        parser.error("--chunk-overlap must be within 0..chunk size / 2")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"--modes: unknown {', '.join(unknown) or '(none given)'}")
    corpus, queries, qrels = load_dataset(args.dataset, args.queries or None)

    digest = hashlib.sha256((args.dataset / "corpus.jsonl").read_bytes()).hexdigest()[:16]
    embedder_key = "".join(c if c.isalnum() or c in "-." else "_" for c in args.embedder)
    # "p2": indexes with passages that list their chunks (an older cache lacks them).
    work = CACHE / f"quality-{digest}-c{args.chunk_size}o{args.chunk_overlap}-{embedder_key}-p2"
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
        ingest_s = build(work, corpus, args.chunk_size, args.embedder, args.chunk_overlap)
    if args.tune:
        tune(queries, qrels)
        return
    results = evaluate(queries, qrels, {m: MODES[m] for m in modes})
    if args.json:
        print(json.dumps(results["scores"], indent=2))
        return
    print_table(results, args, len(corpus), ingest_s)


MODES = {
    "vector": ("vector", None),
    "lexical": ("lexical", None),
    "hybrid": ("hybrid", None),  # the default fusion a new knowledge base gets
    "hybrid_rrf": ("hybrid", "rrf"),
    "hybrid_weighted": ("hybrid", "weighted"),
    "hybrid_adaptive": ("hybrid", "adaptive"),
}


def evaluate(queries: dict[str, str], qrels: dict, modes: dict | None = None) -> dict:
    from knowledge_bases.generations import generation_reader
    from knowledge_bases.models import KnowledgeBase
    from search.ranking.fusion import FusionParams
    from search.ranking.metrics import first_occurrences, mean_metrics, query_metrics
    from search.ranking.results import SearchParams
    from search.services import ranked_hits

    kb = KnowledgeBase.objects.get(slug="quality")
    generation = kb.active_generation
    store = generation_reader(generation)
    rows = store.vectors.rows(columns=["id", "record_id"])
    record_of = {r["id"]: r["record_id"] for r in rows}
    per_mode: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(
        lambda: {"all": [], "tuning": [], "report": []}
    )
    started = time.perf_counter()
    for qid, text in queries.items():
        half = "tuning" if tuning_half(qid) else "report"
        for name, (mode, fusion) in (modes or MODES).items():
            params = SearchParams(query=text, mode=mode, limit=POOL)
            if isinstance(fusion, FusionParams):
                params = SearchParams(query=text, mode=mode, limit=POOL, fusion=fusion)
            elif fusion:
                params = SearchParams(
                    query=text, mode=mode, limit=POOL, fusion=FusionParams(fusion)
                )
            hits, _exact = ranked_hits(generation, store, params, POOL, {})
            ranked = first_occurrences(record_of[h.chunk_id] for h in hits)
            metrics = query_metrics(ranked, qrels[qid])
            per_mode[name]["all"].append(metrics)
            per_mode[name][half].append(metrics)
    seconds = time.perf_counter() - started
    scores = {}
    for name, halves in per_mode.items():
        means = {half: mean_metrics(values) for half, values in halves.items()}
        scores[name] = {
            **{metric: round(value, 4) for metric, value in means["all"].items()},
            "tuning": {metric: round(value, 4) for metric, value in means["tuning"].items()},
            "report": {metric: round(value, 4) for metric, value in means["report"].items()},
        }
    halves_n = {
        "tuning": sum(tuning_half(q) for q in queries),
        "report": sum(not tuning_half(q) for q in queries),
    }
    spread = {}
    if len(per_mode.get("hybrid", {}).get("all", [])) >= 2:
        # How much a half's mean moves with the split alone: the same per-query scores,
        # 1,000 random halves (not used to choose anything).
        import random

        values = [m["ndcg@10"] for m in per_mode["hybrid"]["all"]]
        rng = random.Random(0)
        half = len(values) // 2
        means = sorted(sum(rng.sample(values, half)) / half for _ in range(1000))
        spread = {
            "p5": round(means[50], 4),
            "p50": round(means[500], 4),
            "p95": round(means[950], 4),
        }
    return {
        "scores": scores,
        "hybrid_half_spread": spread,
        "queries": len(queries),
        "halves": halves_n,
        "seconds": seconds,
        "chunks": len(rows),
    }


def tune(queries: dict[str, str], qrels: dict) -> None:
    """Fusion settings on the tuning half only: z-score and weighted (min-max) at vector
    weights 0.3-0.7, z-score statistics over 25, 50 and 100 passages, RRF's k."""
    from search.ranking import fusion
    from search.ranking.fusion import FusionParams

    tuning = {q: t for q, t in queries.items() if tuning_half(q)}
    rows: list[tuple[str, dict]] = []
    depths = [int(d) for d in os.environ.get("TUNE_DEPTHS", "25,50,100,200").split(",")]
    weights = [float(w) for w in os.environ.get("TUNE_WEIGHTS", "0.4,0.5,0.6").split(",")]
    for depth in depths:
        fusion.Z_DEPTH = depth
        grid = {
            f"zscore v{w:.1f} depth {depth}": (
                "hybrid",
                FusionParams("zscore", vector_weight=w, bm25_weight=round(1 - w, 1)),
            )
            for w in weights
        }
        rows.extend(evaluate(tuning, qrels, grid)["scores"].items())
    fusion.Z_DEPTH = 50
    if os.environ.get("TUNE_ZSCORE_ONLY"):
        grid = {}
        print_rows(rows, len(tuning))
        return
    grid = {
        f"weighted v{w:.1f}": (
            "hybrid",
            FusionParams("weighted", vector_weight=w, bm25_weight=round(1 - w, 1)),
        )
        for w in (0.3, 0.4, 0.5, 0.6, 0.7)
    }
    grid.update({f"rrf k{k}": ("hybrid", FusionParams("rrf", k=k)) for k in (10, 60)})
    rows.extend(evaluate(tuning, qrels, grid)["scores"].items())
    print_rows(rows, len(tuning))


def print_rows(rows: list, tuning: int) -> None:
    print(f"\nTuning half only ({tuning} queries): nDCG@10 by fusion setting\n")
    print("| fusion | nDCG@10 | recall@100 |")
    print("|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['ndcg@10']:.4f} | {s['recall@100']:.4f} |")


def print_table(results: dict, args: argparse.Namespace, documents: int, ingest_s: float) -> None:
    scores = results["scores"]
    singles = [scores[m]["ndcg@10"] for m in ("vector", "lexical") if m in scores]
    best_single = max(singles, default=0.0)
    halves = results["halves"]
    print(
        f"\n{args.dataset.name} with {args.embedder}, chunks of {args.chunk_size} overlapping "
        f"{args.chunk_overlap}: {documents} documents -> "
        f"{results['chunks']} chunks, {results['queries']} queries with judgements "
        f"(tuning half {halves['tuning']}, report half {halves['report']}); "
        + (f"index built in {ingest_s:.0f} s" if ingest_s else "cached index")
        + f"; queries took {results['seconds']:.1f} s\n"
    )
    print(
        "| mode | nDCG@10 all | tuning half | report half | recall@10 | recall@100 | MRR | nDCG@10 vs best single mode |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, s in scores.items():
        delta = s["ndcg@10"] - best_single
        vs = f"{delta:+.4f}" if name.startswith("hybrid") and singles else ""
        print(
            f"| {name} | {s['ndcg@10']:.4f} | {s['tuning']['ndcg@10']:.4f} | {s['report']['ndcg@10']:.4f} | "
            f"{s['recall@10']:.4f} | {s['recall@100']:.4f} | {s['mrr']:.4f} | {vs} |"
        )
    spread = results.get("hybrid_half_spread")
    if spread:
        print(
            f"\nhybrid nDCG@10 of a random half of these queries (1,000 splits): 5th percentile "
            f"{spread['p5']:.4f}, median {spread['p50']:.4f}, 95th {spread['p95']:.4f}"
        )


if __name__ == "__main__":
    main()
