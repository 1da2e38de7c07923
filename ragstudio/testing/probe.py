"""A reader in its own process: search a knowledge base's active generation in a loop and
count failures and results that mix generations. Used by the promotion test and by
bench/promote.py:

    python -m ragstudio.testing.probe --kb-id N --stop-file PATH --out PATH

Chunk ids in the probe's generations start with "g<number>c", so a result set is mixed
when any id names another generation than the one the query resolved.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GenerationHits:
    generation: int
    vector_ids: list[str]
    lexical_ids: list[str]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kb-id", type=int, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--dims", type=int, default=384)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragstudio.settings")
    import django

    django.setup()
    import numpy as np

    from knowledge_bases.generations import active_generation, generation_store
    from knowledge_bases.models import Generation

    def generation_search(
        generation: Generation, *, vector: list[float], text: str, k: int
    ) -> GenerationHits:
        # A fresh store per query, as a cold reader would: the swap must hold even then.
        store = generation_store(generation)
        vector_ids = [chunk_id for chunk_id, _ in store.vectors.vector_search(vector, k)]
        return GenerationHits(generation.number, vector_ids, store.bm25.search(text, k))

    rng = np.random.default_rng(7)
    vector = rng.normal(size=args.dims).astype(np.float32)
    vector = (vector / np.linalg.norm(vector)).tolist()
    stats: dict[str, object] = {"queries": 0, "failed": 0, "mixed": 0, "empty": 0, "errors": []}
    generations: dict[int, int] = {}
    latencies: list[float] = []
    generation_search(active_generation(args.kb_id), vector=vector, text="warm up", k=1)
    (args.out.parent / (args.out.name + ".ready")).write_text("ready")  # imports are done
    deadline = time.monotonic() + args.max_seconds
    while not args.stop_file.exists() and time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            generation = active_generation(args.kb_id)
            hits = generation_search(generation, vector=vector, text="protein kinase", k=10)
        except Exception as exc:  # every failure is a finding
            stats["failed"] = int(stats["failed"]) + 1  # type: ignore[call-overload]
            errors = stats["errors"]
            assert isinstance(errors, list)
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}")
            continue
        finally:
            stats["queries"] = int(stats["queries"]) + 1  # type: ignore[call-overload]
        latencies.append(time.perf_counter() - started)
        ids = hits.vector_ids + hits.lexical_ids
        if not hits.vector_ids or not hits.lexical_ids:
            stats["empty"] = int(stats["empty"]) + 1  # type: ignore[call-overload]
        prefix = f"g{hits.generation}c"
        if any(not i.startswith(prefix) for i in ids):
            stats["mixed"] = int(stats["mixed"]) + 1  # type: ignore[call-overload]
        generations[hits.generation] = generations.get(hits.generation, 0) + 1
    stats["generations_seen"] = generations
    stats["p50_ms"] = float(np.median(latencies) * 1000) if latencies else None
    stats["p95_ms"] = float(np.percentile(latencies, 95) * 1000) if latencies else None
    args.out.write_text(json.dumps(stats))


if __name__ == "__main__":
    main()
