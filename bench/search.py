"""Search latency at 100,000 chunks (or several sizes in one run) through the HTTP API on
a real server, and the ANN index's recall@10 against exact search.

    .venv/bin/python bench/search.py [--chunks 100000[,1000000]] [--queries 200]

Chunks: the SciFact chunks built by bench/quality.py (real MiniLM vectors; built first if
its cache is missing), repeated with a little noise on the vectors until there are
--chunks rows. Each size goes into its own knowledge base's active generation (written
as a job writes, the IVF_HNSW_SQ index built as a job builds it), with the time, the
process's peak memory and the disk it took. Then `manage.py runserver` serves the API and each mode is timed
from this process over HTTP (a fresh connection per request, one request at a time), on
SciFact claims not seen before (the server embeds them) and again (embedding cached), the
modes taking turns query by query, after the server's /readyz says its models are loaded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._django import setup  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
QUERIES = ROOT.parent / "shared" / "datasets" / "scifact" / "queries.jsonl"


def source_chunks() -> object:
    """The arrow table of bench/quality.py's chunks (built on first use)."""
    import lancedb

    from ragstudio.core.bounds import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE

    # bench/quality.py's default build (a new knowledge base's chunk settings, local-fast).
    size, overlap = DEFAULT_CHUNK_SIZE, min(DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE // 2)
    pattern = f"quality-*-c{size}o{overlap}-local-fast-p2/data/lancedb"
    dirs = sorted(CACHE.glob(pattern))
    if not dirs:
        print("building the SciFact index first (bench/quality.py, ~5 min)...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "quality.py"), "--queries", "1"], check=True
        )
        dirs = sorted(CACHE.glob(pattern))
    db = lancedb.connect(str(dirs[0]))
    name = db.list_tables().tables[0]
    return (
        db.open_table(name)
        .search()
        .select(["id", "text", "title", "record_id", "ordinal", "vector"])
        .limit(None)
        .to_arrow()
    )


def fill(generation, source, n: int) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from knowledge_bases.generations import generation_store
    from knowledge_bases.models import Document
    from ragstudio.core.types import Chunk, EmbeddedChunk, content_hash, parent_id

    ids = source.column("id").to_pylist()
    texts = source.column("text").to_pylist()
    titles = source.column("title").to_pylist()
    records = source.column("record_id").to_pylist()
    ordinals = source.column("ordinal").to_pylist()
    # Passages as the chunker makes them: a SciFact record's chunks (copies apart).
    members: dict[str, list[int]] = {}
    for i in sorted(range(len(ids)), key=lambda i: ordinals[i]):
        members.setdefault(records[i], []).append(i)
    vectors = np.asarray(source.column("vector").to_pylist(), dtype=np.float32)
    per_doc = 100
    docs = Document.objects.bulk_create(
        Document(
            knowledge_base=generation.knowledge_base,
            title=f"Batch {d}",
            original_filename=f"scifact-{d:04d}.jsonl",
            sha256=f"{d:064x}",
            size=1,
            content_type="application/jsonl",
            storage_path="",
            status=Document.Status.INDEXED,
            chunk_count=per_doc,
        )
        for d in range((n + per_doc - 1) // per_doc)
    )
    rng = np.random.default_rng(0)
    store = generation_store(generation)
    batch = []
    for i in range(n):
        src = i % len(ids)
        copy = i // len(ids)
        vec = vectors[src]
        text = texts[src]
        if copy:
            noise = rng.normal(size=vec.shape).astype(np.float32)
            vec = vec + 0.3 * noise / np.linalg.norm(noise)
            vec = vec / np.linalg.norm(vec)
            text = f"{text} (copy {copy})"
        passage = members[records[src]]
        head = passage[0] == src
        passage_text = " ".join(texts[j] for j in passage) + (f" (copy {copy})" if copy else "")
        chunk = Chunk(
            id=f"c{copy}-{ids[src]}",
            document_id=docs[i // per_doc].pk,
            ordinal=i % per_doc,
            text=text,
            content_hash=content_hash(text),
            token_count=0,
            title=titles[src] or "",
            record_id=records[src],
            parent_id=parent_id(copy, passage[0], content_hash(records[src])),
            parent_text=passage_text if head else "",
            parent_chunks=tuple(f"c{copy}-{ids[j]}" for j in passage) if head else (),
        )
        batch.append(EmbeddedChunk(chunk, vec, new=True))
        if len(batch) == 5000:
            store.write(batch)
            batch = []
    store.write(batch)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def post(port: int, token: str, body: dict, slug: str = "bench") -> tuple[float, dict]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST",
        f"/api/kbs/{slug}/search",
        json.dumps(body),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    data = response.read()
    conn.close()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise SystemExit(f"error: HTTP {response.status}: {data[:300]!r}")
    return elapsed, json.loads(data)


def ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/readyz")
        status = conn.getresponse().status
        conn.close()
    except OSError:
        return False
    return status == 200


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def build(user, size: int, source) -> dict:  # type: ignore[no-untyped-def]
    """A knowledge base ``bench-SIZE`` with an active generation of ``size`` chunks."""
    from knowledge_bases.generations import (
        embedder_get,
        generation_create,
        generation_store,
        transition,
    )
    from knowledge_bases.models import Generation, KnowledgeBase
    from knowledge_bases.services import knowledge_base_create
    from ragstudio.env import rag_settings

    kb = knowledge_base_create(slug=f"bench-{size}", name=f"Bench {size}", owner=user)
    generation = generation_create(kb=kb)
    started = time.perf_counter()
    fill(generation, source, size)
    write_s = time.perf_counter() - started
    rss_written = peak_rss_mb()
    store = generation_store(generation)
    started = time.perf_counter()
    outcome = store.vectors.ensure_vector_index(min_rows=rag_settings()["ANN_MIN_ROWS"])
    index_s = time.perf_counter() - started
    embedder = embedder_get(kb.embedder)
    Generation.objects.filter(pk=generation.pk).update(
        chunk_count=size, embedder_fingerprint=embedder.fingerprint
    )
    generation.refresh_from_db()
    transition(generation, Generation.Status.ACTIVE)
    KnowledgeBase.objects.filter(pk=kb.pk).update(active_generation=generation)
    lance = Path(store.vectors.uri) / f"{store.vectors.table_name}.lance"
    print(
        f"{size} chunks written in {write_s:.1f} s; vector index {outcome} in {index_s:.1f} s",
        file=sys.stderr,
    )
    return {
        "size": size,
        "slug": kb.slug,
        "store": store,
        "embedder": embedder,
        "write_s": write_s,
        "index_s": index_s,
        "rss_written": rss_written,
        "rss_indexed": peak_rss_mb(),
        "vectors_mb": disk_mb(lance),
        "bm25_mb": disk_mb(Path(store.bm25.path)),
    }


def plan_for(claims: list[str], q: int) -> list[tuple[str, str, list[str], dict]]:
    # Each mode its own new claims, dealt in turn (the first to vector, the second to
    # lexical, the third to hybrid, ...), so each gets claims of the same lengths: the
    # file's later claims run longer, which made a query's embedding slower for the mode
    # that had them.
    vector, lexical, hybrid = claims[0 : 3 * q : 3], claims[1 : 3 * q : 3], claims[2 : 3 * q : 3]
    return [
        ("vector", "new queries", vector, {"mode": "vector"}),
        ("lexical", "new queries", lexical, {"mode": "lexical"}),
        ("hybrid (zscore, default)", "new queries", hybrid, {"mode": "hybrid"}),
        ("hybrid (zscore, default)", "repeated", hybrid, {"mode": "hybrid"}),
        ("hybrid (rrf)", "repeated", hybrid, {"mode": "hybrid", "fusion": "rrf"}),
        ("hybrid (adaptive)", "repeated", hybrid, {"mode": "hybrid", "fusion": "adaptive"}),
        ("vector", "repeated", vector, {"mode": "vector"}),
    ]


def measure(port: int, token: str, slug: str, claims: list[str], q: int) -> list[tuple]:
    """Each row of the plan timed; the rows of one kind (new queries, then repeated) take
    turns query by query, so a drift in the machine's speed (a busy neighbour) weighs on
    each mode alike and their ratios hold from run to run."""
    for claim in claims[-20:]:  # warm the model and this table's index cache
        post(port, token, {"query": claim, "mode": "hybrid"}, slug)
    plan = plan_for(claims, q)
    times: list[list[float]] = [[] for _ in plan]
    server_ms: list[list[float]] = [[] for _ in plan]
    exact = [False for _ in plan]
    parts: list[dict[str, list[float]]] = [{} for _ in plan]
    for kind in dict.fromkeys(kind for _, kind, _, _ in plan):
        turns = [i for i, row in enumerate(plan) if row[1] == kind]
        for n in range(q):
            for i in turns:
                _label, _kind, texts, extra = plan[i]
                body = {"query": texts[n], "limit": 10, **extra}
                elapsed, answer = post(port, token, body, slug)
                times[i].append(elapsed)
                server_ms[i].append(answer["took_ms"])
                exact[i] = exact[i] or answer["exact_vector_search"]
                for key, value in answer["timings"].items():
                    parts[i].setdefault(key, []).append(value)
    rows = []
    for i, (label, kind, texts, _extra) in enumerate(plan):
        breakdown = ", ".join(
            f"{k.removesuffix('_ms')} {statistics.median(v):.1f}" for k, v in parts[i].items()
        )
        rows.append((label, kind, len(texts), times[i], server_ms[i], exact[i], breakdown))
    return rows


def serve_and_measure(port: int, token: str, slug: str, claims: list[str], q: int) -> list[tuple]:
    # One user asks for every search here: the per-user rate limit would answer 429.
    env = {
        **os.environ,
        "RAGSTUDIO_LOG_LEVEL": "WARNING",
        "RAGSTUDIO_USER_SEARCHES_PER_MINUTE": "0",
    }
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Ready as a deployment is: /readyz answers 200 once the process has loaded its
        # models (the development server starts loading them at the first probe).
        deadline = time.monotonic() + 120
        while not ready(port):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("error: the server did not become ready")
            time.sleep(0.25)
        return measure(port, token, slug, claims, q)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--chunks", default="100000", help="chunks, or sizes separated by commas (one run)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    try:
        sizes = sorted({int(c) for c in args.chunks.split(",")})
    except ValueError:
        parser.error("--chunks: whole numbers separated by commas")
    if min(sizes) < 1000 or not 10 <= args.queries <= 250:
        parser.error("--chunks must be >= 1000 and --queries within 10..250")
    source = source_chunks()
    work = setup("ragstudio-bench-search-")
    from django.contrib.auth import get_user_model

    from knowledge_bases.models import ApiToken

    user = get_user_model().objects.create_user("bench")
    _row, token = ApiToken.issue(user=user)
    built = [build(user, size, source) for size in sizes]

    with open(QUERIES, encoding="utf-8") as fh:
        claims = [json.loads(line)["text"] for line in fh][: 4 * args.queries + 20]
    recall = {
        b["size"]: ann_recall(b["store"], b["embedder"], claims[: args.queries]) for b in built
    }

    latency: dict[int, list[tuple]] = {}
    try:
        for b in built:
            # A server per size: the same new queries find no cached embedding.
            latency[b["size"]] = serve_and_measure(
                args.port, token, b["slug"], claims, args.queries
            )
    finally:
        import shutil

        if args.keep:
            print(f"data directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print("\nBuilt in this process, one size after another (peak memory: the process's so far)\n")
    print(
        "| chunks | write s | index s | peak RSS after writing MB | after indexing MB | vectors on disk MB | BM25 on disk MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for b in built:
        print(
            f"| {b['size']:,} | {b['write_s']:.1f} | {b['index_s']:.1f} | {b['rss_written']:.0f} "
            f"| {b['rss_indexed']:.0f} | {b['vectors_mb']:.0f} | {b['bm25_mb']:.0f} |"
        )
    print("\nlimit 10, 384 dims, HTTP on 127.0.0.1 (Django runserver)\n")
    print(
        "| chunks | mode | queries | n | p50 ms | p95 ms | server p50 ms | server p95 ms "
        "| exact vectors | server p50 by stage (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, rows in latency.items():
        for label, kind, n, times, server_ms, exact, breakdown in rows:
            exact_text = "-" if label == "lexical" else ("yes" if exact else "no")
            print(
                f"| {size:,} | {label} | {kind} | {n} | {statistics.median(times):.1f} "
                f"| {percentile(times, 0.95):.1f} | {statistics.median(server_ms):.1f} "
                f"| {percentile(server_ms, 0.95):.1f} | {exact_text} | {breakdown} |"
            )
        new = {label: times for label, kind, _n, times, *_ in rows if kind == "new queries"}
        server = {label: ms for label, kind, _n, _t, ms, *_ in rows if kind == "new queries"}
        hybrid, vector = new["hybrid (zscore, default)"], new["vector"]
        slower = max(statistics.median(server["vector"]), statistics.median(server["lexical"]))
        print(
            f"\n{size:,} chunks, new queries: hybrid p95 / vector p95 = "
            f"{percentile(hybrid, 0.95) / percentile(vector, 0.95):.2f}; server p50, hybrid / "
            f"the slower engine alone = "
            f"{statistics.median(server['hybrid (zscore, default)']) / slower:.2f}\n"
        )
    print("\nANN (IVF_HNSW_SQ) against exact search, same query vectors, in process\n")
    print("| chunks | nprobes | refine_factor | ef | recall@10 | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for size, rows in recall.items():
        for row in rows:
            print(f"| {size:,} | " + " | ".join(row) + " |")


def ann_recall(store, embedder, claims: list[str]) -> list[list[str]]:  # type: ignore[no-untyped-def]
    from ragstudio.env import rag_settings

    vectors = embedder.embed_batch(claims)
    exact_ids, exact_ms = [], []
    for v in vectors:
        started = time.perf_counter()
        exact_ids.append({i for i, _ in store.vectors.vector_search(v, 10, exact=True)})
        exact_ms.append((time.perf_counter() - started) * 1000)
    rows = [
        [
            "exact",
            "-",
            "-",
            "1.000",
            f"{statistics.median(exact_ms):.1f}",
            f"{percentile(exact_ms, 0.95):.1f}",
        ]
    ]
    cfg = rag_settings()
    # (nprobes, refine factor, ef): the defaults, and around them.
    settings = [
        (cfg["ANN_NPROBES"], 1, cfg["ANN_EF"]),
        (cfg["ANN_NPROBES"], cfg["ANN_REFINE_FACTOR"], None),
        (cfg["ANN_NPROBES"], cfg["ANN_REFINE_FACTOR"], 200),
        (cfg["ANN_NPROBES"], cfg["ANN_REFINE_FACTOR"], cfg["ANN_EF"]),
        (cfg["ANN_NPROBES"], 10, cfg["ANN_EF"]),
    ]
    default = (cfg["ANN_NPROBES"], cfg["ANN_REFINE_FACTOR"], cfg["ANN_EF"])
    for nprobes, refine, ef in dict.fromkeys(settings):
        recalls, times = [], []
        for v, truth in zip(vectors, exact_ids, strict=True):
            started = time.perf_counter()
            found = {
                i
                for i, _ in store.vectors.vector_search(
                    v, 10, nprobes=nprobes, refine_factor=refine, ef=ef
                )
            }
            times.append((time.perf_counter() - started) * 1000)
            recalls.append(len(found & truth) / 10)
        marker = " (default)" if (nprobes, refine, ef) == default else ""
        rows.append(
            [
                str(nprobes),
                str(refine),
                f"{ef or 'LanceDB default'}{marker}",
                f"{statistics.mean(recalls):.3f}",
                f"{statistics.median(times):.1f}",
                f"{percentile(times, 0.95):.1f}",
            ]
        )
    return rows


if __name__ == "__main__":
    main()
