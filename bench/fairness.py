"""One user's backlog against another user's single uploads, through a real worker.

    .venv/bin/python bench/fairness.py [--b-uploads 6] [--every 10] [--a-jobs 20]

User B uploads one small document every ``--every`` seconds; each upload's time until the
document is searchable is measured, first with user A idle, then with A busy: A has
asked for a rebuild of each of its two knowledge bases (its limit of live rebuilds), then
queued ``--a-jobs`` uploads of a long document each (one job each, as many as A's limit of
queued jobs lets through: the rest are refused with 429). One django-q2 cluster with one
worker runs everything, as ``make run`` does. Prints B's p50 and max per phase, and what
A's requests were answered.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._django import ROOT, setup


def long_text(topic: str, sentences: int) -> bytes:
    return " ".join(
        f"Report {i} on {topic} describes measurement {i * 7} and its uncertainty in detail."
        for i in range(sentences)
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--b-uploads", type=int, default=6)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--a-jobs", type=int, default=40, help="uploads A tries to queue")
    parser.add_argument("--a-sentences", type=int, default=1500, help="size of A's documents")
    args = parser.parse_args()
    if args.b_uploads < 1 or args.every <= 0 or args.a_jobs < 0:
        parser.error("counts must be positive")
    work = setup("ragstudio-bench-fairness-")
    os.environ.setdefault("RAGSTUDIO_WORKERS", "1")
    from django.contrib.auth import get_user_model

    from ingestion.models import IngestionJob
    from ingestion.services import IncomingFile, documents_upload
    from knowledge_bases.generations import embedder_get
    from knowledge_bases.models import Document
    from knowledge_bases.services import generation_rebuild_start, knowledge_base_create
    from ragstudio.core.errors import TooManyRequests

    users = get_user_model().objects
    a, b = users.create_user("user-a"), users.create_user("user-b")
    a_kbs = [knowledge_base_create(slug=f"a{n}", name=f"A {n}", owner=a) for n in range(2)]
    b_kb = knowledge_base_create(slug="b", name="B", owner=b)
    embedder_get(b_kb.embedder)
    log = open(work / "qcluster.log", "w")  # noqa: SIM115
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env={**os.environ, "RAGSTUDIO_WORKERS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def searchable(doc_id: int) -> bool:
        return Document.objects.filter(pk=doc_id, status="indexed", serving_version__gt=0).exists()

    def wait(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out; see {work / 'qcluster.log'}")
            time.sleep(0.2)

    def b_phase(tag: str) -> list[float]:
        times: list[float] = []
        for n in range(args.b_uploads):
            started = time.monotonic()
            result = documents_upload(
                kb=b_kb,
                files=[IncomingFile(name=f"{tag}-{n}.txt", chunks=[long_text(f"{tag}{n}", 8)])],
                user=b,
            )
            doc = result.accepted[0]
            wait(lambda d=doc.pk: searchable(d), 900)
            times.append(time.monotonic() - started)
            rest = args.every - (time.monotonic() - started)
            if rest > 0 and n < args.b_uploads - 1:
                time.sleep(rest)
        return times

    try:
        # Each KB of A gets a first document (so it can be rebuilt) before anything is timed.
        for kb in a_kbs:
            documents_upload(
                kb=kb, files=[IncomingFile(name="seed.txt", chunks=[long_text("seed", 50)])], user=a
            )
        wait(lambda: not IngestionJob.objects.filter(status__in=IngestionJob.LIVE).exists(), 600)
        idle = b_phase("idle")

        rebuilds = {"queued": 0, "429": 0}
        for kb in a_kbs:
            try:
                generation_rebuild_start(kb=kb, user=a, auto_promote=True)
                rebuilds["queued"] += 1
            except TooManyRequests:
                rebuilds["429"] += 1
        answers = {"queued": 0, "429": 0}
        for n in range(args.a_jobs):
            try:
                documents_upload(
                    kb=a_kbs[n % 2],
                    files=[
                        IncomingFile(
                            name=f"long-{n}.txt", chunks=[long_text(f"a{n}", args.a_sentences)]
                        )
                    ],
                    user=a,
                )
                answers["queued"] += 1
            except TooManyRequests:
                answers["429"] += 1
        a_backlog = IngestionJob.objects.filter(created_by=a, status__in=IngestionJob.LIVE).count()
        busy_started = time.monotonic()
        busy = b_phase("busy")
        a_left = IngestionJob.objects.filter(created_by=a, status__in=IngestionJob.LIVE).count()
        busy_s = time.monotonic() - busy_started
        a_runs = {
            kind: [
                (j.finished_at - j.started_at).total_seconds()
                for j in IngestionJob.objects.filter(created_by=a, kind=kind)
                if j.started_at and j.finished_at
            ]
            for kind in ("ingest", "rebuild")
        }
    finally:
        cluster.terminate()
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cluster.kill()
        log.close()

    def row(name: str, times: list[float]) -> str:
        return f"| {name} | {len(times)} | {statistics.median(times):.1f} | {max(times):.1f} |"

    print(
        f"\nB: one {len(long_text('x', 8))}-byte document every {args.every:.0f} s; A: "
        f"{args.a_sentences}-sentence documents, one upload each; one worker"
    )
    print("| phase | B's uploads | B to searchable p50 s | max s |")
    print("|---|---|---|---|")
    print(row("A idle", idle))
    print(row("A busy", busy))
    longest = max([*a_runs["ingest"], *a_runs["rebuild"], 0.0])
    rebuild_s = ", ".join(f"{x:.1f}" for x in a_runs["rebuild"]) or "none"
    print(
        f"\nA's uploads: {answers['queued']} queued, {answers['429']} refused (429); rebuilds: "
        f"{rebuilds['queued']} queued, {rebuilds['429']} refused; A's live jobs when B began "
        f"{a_backlog}, {a_left} left after {busy_s:.0f} s; A's longest upload job "
        f"{max(a_runs['ingest'] or [0.0]):.1f} s, its rebuilds {rebuild_s} s"
    )
    bound = 2 * max(idle) + longest
    print(
        f"target: B's max under 2 x idle max + one of A's jobs = {bound:.1f} s: "
        f"{'met' if max(busy) <= bound else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
