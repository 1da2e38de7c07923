"""Zero-downtime swaps: a separate process searches a knowledge base in a loop while this
one promotes and rolls back generations and runs GC.

    .venv/bin/python bench/promote.py [--flips 600] [--seconds 20] [--gc-every 50]

Prints the reader's queries, failures, results mixing two generations, latency, and the
writer's flips. Generations are synthetic (6 rows of 384-d vectors each, ids naming their
generation) on real LanceDB tables and tantivy indexes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._django import setup


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flips", type=int, default=600)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--gc-every", type=int, default=50)
    args = parser.parse_args()
    if args.flips < 1 or args.gc_every < 1 or args.seconds < 0:
        parser.error("--flips and --gc-every must be positive, --seconds not negative")
    work = setup("ragstudio-bench-promote-")
    try:
        from django.contrib.auth import get_user_model

        from knowledge_bases.models import Generation
        from knowledge_bases.services import knowledge_base_create
        from ragstudio.testing.generations import make_generation
        from ragstudio.testing.swap import flip_generations, start_probe, stop_probe

        S = Generation.Status
        user = get_user_model().objects.create_user("bench")
        kb = knowledge_base_create(slug="swap", name="Swap", owner=user)
        kb.retention = 0
        kb.save()
        make_generation(kb, S.ARCHIVED)
        make_generation(kb, S.READY)
        make_generation(kb, S.ACTIVE)
        for _ in range(3):
            make_generation(kb, S.ARCHIVED)  # old: GC deletes them during the run
        proc, stop, out = start_probe(kb, work, dict(os.environ))
        try:
            done = flip_generations(
                kb, [1, 2, 3], flips=args.flips, gc_every=args.gc_every, min_seconds=args.seconds
            )
        finally:
            stats = stop_probe(proc, stop, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nReader (separate process): active generation resolved per query, vector + BM25 search")
    print("| queries | failed | mixing generations | empty | p50 ms | p95 ms | generations seen |")
    print("|---|---|---|---|---|---|---|")
    seen = ", ".join(f"#{k}: {v}" for k, v in sorted(stats["generations_seen"].items()))
    print(
        f"| {stats['queries']} | {stats['failed']} | {stats['mixed']} | {stats['empty']} | "
        f"{stats['p50_ms']:.1f} | {stats['p95_ms']:.1f} | {seen} |"
    )
    print("\nWriter: promote / rollback / GC")
    print(
        "| flips | promotes | rollbacks | refused (legal) | GC runs | collected | slowest flip ms |"
    )
    print("|---|---|---|---|---|---|---|")
    refused = done["flips"] - done["promotes"] - done["rollbacks"]
    print(
        f"| {done['flips']} | {done['promotes']} | {done['rollbacks']} | {refused} | {done['gc_runs']} | "
        f"{sorted(set(done['collected']))} | {done['slowest_flip_ms']:.1f} |"
    )
    if stats["failed"] or stats["mixed"]:
        print("\nFAILED searches:", stats["errors"])
        sys.exit(1)


if __name__ == "__main__":
    main()
