"""One user's backlog against another user's single uploads, through a real worker, and
a web server under slow clients and evaluation runs.

    .venv/bin/python bench/fairness.py [--b-uploads 6] [--every 10] [--a-jobs 40]

User B uploads one small document every ``--every`` seconds; each upload's time until the
document is searchable is measured, first with user A idle, then with A busy: A has
asked for a rebuild of each of its two knowledge bases (its limit of live rebuilds), then
queued ``--a-jobs`` uploads of a long document each (one job each, as many as A's limit of
queued jobs lets through: the rest are refused with 429). One django-q2 cluster with one
worker runs everything, as ``make run`` does. Prints B's p50 and max per phase, and what
A's requests were answered.

A third phase starts the web server (``manage.py serve --no-cluster``: its processes and
threads as configured) and opens ``--slow-clients`` connections that send a request a
byte a second (half stalled in their headers, half in a form's body), while A's two
evaluation runs of ``--eval-queries`` queries run in the worker and A queues uploads
again; meanwhile B uploads as before, and a probe asks for B's knowledge-base page and
B's API search twice a second. Prints the probes' p50 / p95 / max.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.cookiejar import CookieJar
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
    parser.add_argument("--slow-clients", type=int, default=20)
    parser.add_argument("--eval-queries", type=int, default=1000)
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
    from ragstudio.env import rag_settings

    users = get_user_model().objects
    a, b = users.create_user("user-a"), users.create_user("user-b", password="bench-password")
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

    def queue_a_uploads(tag: str) -> dict[str, int]:
        answers = {"queued": 0, "429": 0}
        for n in range(args.a_jobs):
            try:
                documents_upload(
                    kb=a_kbs[n % 2],
                    files=[
                        IncomingFile(
                            name=f"{tag}-{n}.txt", chunks=[long_text(f"{tag}{n}", args.a_sentences)]
                        )
                    ],
                    user=a,
                )
                answers["queued"] += 1
            except TooManyRequests:
                answers["429"] += 1
        return answers

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
        answers = queue_a_uploads("long")
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
        web = web_phase(args, work, a, b, a_kbs, b_kb, b_phase, queue_a_uploads)
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
    window = rag_settings()["JOB_WINDOW_SECONDS"]
    bound = 2 * max(idle) + window
    print(
        f"target: B's max under 2 x idle max + one window ({window:.0f} s) = {bound:.1f} s: "
        f"{'met' if max(busy) <= bound else 'NOT met'} (A's longest job {longest:.1f} s)"
    )
    print(
        f"\nWeb: `serve` ({web['processes']} processes x {web['threads']} threads), "
        f"{args.slow_clients} slow clients open, A's evaluations "
        f"({args.eval_queries} queries each): {web['evaluations']}"
    )
    print("| probe | requests | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, times in web["probes"].items():
        ms = sorted(t * 1000 for t in times)
        p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
        print(f"| {name} | {len(ms)} | {statistics.median(ms):.0f} | {p95:.0f} | {ms[-1]:.0f} |")
    print(
        f"B's uploads meanwhile: p50 {statistics.median(web['b']):.1f} s, max {max(web['b']):.1f} s"
    )
    worst = max(
        sorted(web["probes"][n])[min(len(web["probes"][n]) - 1, int(0.95 * len(web["probes"][n])))]
        for n in web["probes"]
    )
    print(f"target: probes' p95 under 1 s: {'met' if worst < 1.0 else 'NOT met'} ({worst:.2f} s)")


def web_phase(args, work, a, b, a_kbs, b_kb, b_phase, queue_a_uploads):  # type: ignore[no-untyped-def]
    """The web server with slow clients and A's evaluations; B's page and search probed."""
    from django.conf import settings

    from knowledge_bases.services.keys import api_key_create
    from search.evaluation import (
        QueryIn,
        evaluation_queries_add,
        evaluation_run_request,
        evaluation_set_create,
    )
    from search.models import EvaluationRun

    runs = []
    for n, kb in enumerate(a_kbs):
        kb.refresh_from_db()
        evaluation_set = evaluation_set_create(kb=kb, name=f"eval{n}")
        evaluation_queries_add(
            evaluation_set=evaluation_set,
            queries=[
                QueryIn(text=f"measurement {q * 7} of seed {q}", relevant=["seed.txt"])
                for q in range(args.eval_queries)
            ],
        )
        runs.append((evaluation_set, kb.active_generation))
    _token, key = api_key_create(user=b, name="bench")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = open(work / "serve.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}", "--no-cluster"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop = threading.Event()
    slow: list[socket.socket] = []
    probes: dict[str, list[float]] = {"B's knowledge-base page": [], "B's API search": []}
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {work / 'serve.log'}")
            time.sleep(0.5)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        form = opener.open(f"{base}/accounts/login/").read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
        assert token is not None
        opener.open(
            urllib.request.Request(
                f"{base}/accounts/login/",
                data=(
                    f"csrfmiddlewaretoken={token.group(1)}&username=user-b&password=bench-password"
                ).encode(),
                headers={"Referer": f"{base}/accounts/login/"},
            )
        ).read()

        for n in range(args.slow_clients):
            conn = socket.create_connection(("127.0.0.1", port))
            if n % 2:
                conn.sendall(b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            else:
                conn.sendall(
                    b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 100000\r\n\r\nusername="
                )
            slow.append(conn)

        def trickle() -> None:
            while not stop.wait(1.0):
                for conn in slow:
                    with contextlib.suppress(OSError):
                        conn.sendall(b"a")

        def probe() -> None:
            search = json.dumps({"query": "measurement uncertainty", "mode": "hybrid"}).encode()
            while not stop.wait(0.5):
                for name, request in (
                    ("B's knowledge-base page", f"{base}/kbs/b/"),
                    (
                        "B's API search",
                        urllib.request.Request(
                            f"{base}/api/kbs/b/search",
                            data=search,
                            headers={
                                "Authorization": f"Bearer {key}",
                                "Content-Type": "application/json",
                            },
                        ),
                    ),
                ):
                    started = time.monotonic()
                    with opener.open(request, timeout=60) as response:
                        response.read()
                    probes[name].append(time.monotonic() - started)

        for evaluation_set, generation in runs:
            evaluation_run_request(evaluation_set=evaluation_set, generation=generation, user=a)
        queue_a_uploads("web")
        threads = [threading.Thread(target=f, daemon=True) for f in (trickle, probe)]
        for thread in threads:
            thread.start()
        b_times = b_phase("web")
        stop.set()
        for thread in threads:
            thread.join(timeout=70)
        evaluations = ", ".join(
            f"{r.status} {r.done}/{r.queries}"
            + (f" in {r.seconds:.0f} s" if r.status == "succeeded" else "")
            for r in EvaluationRun.objects.order_by("pk")
        )
    finally:
        stop.set()
        for conn in slow:
            conn.close()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    return {
        "processes": settings.WEB_WORKERS,
        "threads": settings.WEB_THREADS,
        "probes": probes,
        "b": b_times,
        "evaluations": evaluations,
    }


if __name__ == "__main__":
    main()
