"""Several hosts, simulated: real processes that share nothing but PostgreSQL, Redis and an
S3 API (each its own data directory): two web servers (gunicorn) and two worker clusters.
Upload on web A, ingest on workers B and C (two knowledge bases at once), search on web D
all along, promote on A, roll back and collect on D.

Runs in the scale-out run (`make test-scaleout`: PostgreSQL and Redis); skipped on the
embedded defaults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

from ingestion.models import IngestionJob
from knowledge_bases.models import ApiToken, Generation, KnowledgeBase
from tests.cluster import free_port, wait_for, wait_for_http
from tests.factories import make_user
from tests.helpers import subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[1]
S = Generation.Status


def _word(i: int) -> str:
    """A made-up word for document i, so each document is found by one term of its own."""
    letters = "bcdfghjklmnpqrstvwxz"
    return "zq" + "".join(letters[(i // 20**k) % 20] for k in range(3)) + "ix"


def _documents(prefix: str, n: int) -> list[tuple[str, bytes]]:
    return [
        (
            f"{prefix}-{i}.txt",
            (
                f"Report {i} of the {prefix} collection mentions {_word(i)} twice: {_word(i)}. "
                + " ".join(f"Sentence {j} adds detail {j * 7} to report {i}." for j in range(40))
            ).encode(),
        )
        for i in range(n)
    ]


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "ragstudio-boundary-7f3a"
    body = b""
    for name, data in files:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{name}"\r\nContent-Type: text/plain\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def call(self, method: str, path: str, body: Any = None, raw: tuple | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if raw is not None:
            data, headers["Content-Type"] = raw
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")


def _host_env(tmp_path: Path, name: str) -> dict[str, str]:
    env = subprocess_env(
        tmp_path / name,
        RAGSTUDIO_GC_MIN_AGE_SECONDS="0",
        RAGSTUDIO_HEARTBEAT_STALE_SECONDS="10",
        RAGSTUDIO_WORKERS="1",
        RAGSTUDIO_STORE_BATCH_SIZE="64",  # several BM25 versions a job
    )
    env["RAGSTUDIO_MODEL_DIR"] = str(django_settings.RAGSTUDIO["MODEL_DIR"])
    return env


def test_hosts_sharing_only_postgres_redis_and_the_object_store_act_as_one(
    tmp_path: Path,
) -> None:
    if connection.vendor != "postgresql" or not django_settings.RAGSTUDIO["STORAGE_URI"]:
        if os.environ.get("CI") and os.environ.get("RAGSTUDIO_TEST_SCALEOUT"):
            pytest.fail("the scale-out run must have PostgreSQL and an object store")
        pytest.skip("runs in the scale-out run (make test-scaleout)")
    assert django_settings.Q_CLUSTER.get("redis"), "the scale-out run uses Redis"
    user = make_user("ops", is_staff=True)
    _row, token = ApiToken.issue(user=user)
    ports = {"web-a": free_port(), "web-d": free_port()}
    procs: dict[str, subprocess.Popen] = {}
    logs = []
    try:
        for name in ("web-a", "web-d"):
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115
            logs.append(log)
            procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "serve",
                    f"127.0.0.1:{ports[name]}",
                    "--no-cluster",
                    "--workers",
                    "1",
                ],
                cwd=ROOT,
                env=_host_env(tmp_path, name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for name in ("worker-b", "worker-c"):
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115
            logs.append(log)
            procs[name] = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--no-web"],
                cwd=ROOT,
                env=_host_env(tmp_path, name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for port in ports.values():
            wait_for_http(f"http://127.0.0.1:{port}/accounts/login/", timeout=90)
        # Both worker clusters listening on the broker before any task is sent (a cluster
        # takes a task when it is idle and asks first).
        from django_q.brokers import get_broker
        from django_q.status import Stat

        wait_for(
            lambda: sum(1 for s in Stat.get_all(broker=get_broker()) if s.status == "Idle") >= 2,
            120,
            "two idle worker clusters",
        )
        web_a = Api(f"http://127.0.0.1:{ports['web-a']}", token)
        web_d = Api(f"http://127.0.0.1:{ports['web-d']}", token)

        # Two knowledge bases, uploaded on A; two worker hosts take their jobs.
        for slug in ("alpha", "beta"):
            web_a.call("POST", "/api/kbs", {"slug": slug, "name": slug.title()})
        alpha_docs, beta_docs = _documents("alpha", 40), _documents("beta", 40)
        job_a = web_a.call("POST", "/api/kbs/alpha/documents", raw=_multipart(alpha_docs))["job"]
        job_b = web_a.call("POST", "/api/kbs/beta/documents", raw=_multipart(beta_docs))["job"]
        workers: set[str] = set()

        def watch_workers() -> bool:
            for job in IngestionJob.objects.filter(pk__in=[job_a["id"], job_b["id"]]):
                if job.worker:
                    workers.add(job.worker)
            return (
                IngestionJob.objects.filter(
                    pk__in=[job_a["id"], job_b["id"]], status="succeeded"
                ).count()
                == 2
            )

        wait_for(watch_workers, 300, "both ingest jobs")
        assert len(workers) == 2, workers  # B and C each ran one, at the same time

        # Searches on D from now on, in a thread, while A and D change generations.
        alpha = KnowledgeBase.objects.get(slug="alpha")
        outcomes: list[tuple[float, float, int, int, str]] = []
        stop = threading.Event()

        def hammer() -> None:
            i = 0
            while not stop.is_set():
                doc = i % len(alpha_docs)
                started = time.time()
                try:
                    body = web_d.call(
                        "POST",
                        "/api/kbs/alpha/search",
                        {"query": _word(doc), "mode": "lexical", "limit": 5},
                    )
                    names = [r["citation"]["filename"] for r in body["results"]]
                    ok = names[:1] == [f"alpha-{doc}.txt"]
                    outcomes.append(
                        (
                            started,
                            time.time(),
                            body["generation"],
                            doc,
                            "ok" if ok else f"missed {names}",
                        )
                    )
                except (urllib.error.URLError, OSError, KeyError) as exc:
                    outcomes.append((started, time.time(), 0, doc, f"failed: {exc}"))
                i += 1

        thread = threading.Thread(target=hammer, daemon=True)
        thread.start()
        try:
            # Every committed chunk is visible on D: each document by its own word.
            for i in range(len(beta_docs)):
                body = web_d.call(
                    "POST", "/api/kbs/beta/search", {"query": _word(i), "mode": "lexical"}
                )
                assert body["results"][0]["citation"]["filename"] == f"beta-{i}.txt"
            # A rebuild (on whichever worker), promoted on A.
            job = web_a.call(
                "POST", "/api/kbs/alpha/generations/rebuild", {"chunk_size": 48, "chunk_overlap": 4}
            )
            wait_for(
                lambda: Generation.objects.filter(
                    knowledge_base=alpha, number=2, status=S.READY, check_passed=True
                ).exists(),
                300,
                "generation 2 of alpha to be ready",
            )
            assert IngestionJob.objects.get(pk=job["id"]).status == "succeeded"

            def searches_after(moment: float, n: int = 5) -> None:
                wait_for(
                    lambda: sum(1 for o in list(outcomes) if o[0] > moment) >= n,
                    120,
                    f"{n} searches on D",
                )

            swaps: list[tuple[float, float, int, int]] = []  # (from, to) within a window
            began = time.time()
            web_a.call("POST", "/api/kbs/alpha/generations/2/promote", {})
            swaps.append((began, time.time(), 1, 2))
            searches_after(time.time())  # D searches across the swap (the thread runs on)
            began = time.time()
            web_d.call("POST", "/api/kbs/alpha/generations/rollback", {})
            swaps.append((began, time.time(), 2, 1))
            searches_after(time.time())
            KnowledgeBase.objects.filter(pk=alpha.pk).update(retention=0)
            gc = web_d.call("POST", "/api/kbs/alpha/generations/gc", {})
            assert gc["collected"] == [2] and gc["files_deleted"] == [2]
            searches_after(time.time())
        finally:
            stop.set()
            thread.join(timeout=60)

        assert outcomes, "no search ran"
        failures = [o for o in outcomes if o[4] != "ok"]
        assert failures == [], failures[:5]

        # No result from a generation that was not active at some moment of its request:
        # a swap commits somewhere inside its request's window, where either side may
        # serve; outside the windows, only the one active then.
        def active_during(start: float, end: float) -> set[int]:
            valid: set[int] = set()
            current = 1
            edge = 0.0
            for began, done, before, after in swaps:
                if start <= began and end >= edge:
                    valid.add(before)
                if start <= done and end >= began:
                    valid |= {before, after}
                current, edge = after, done
            if end >= edge:
                valid.add(current)
            return valid

        for started, ended, number, _doc, _ in outcomes:
            assert number in active_during(started, ended), (number, started, ended, swaps)
        served = {o[2] for o in outcomes}
        assert served == {1, 2}, served  # D saw the promote and the rollback
        # The collected generation's objects are gone from the store; the active one's stay.
        from search.stores.objects import ObjectStore, storage_options_items

        store = ObjectStore(
            django_settings.RAGSTUDIO["STORAGE_URI"],
            storage_options_items(django_settings.RAGSTUDIO["STORAGE_OPTIONS"]),
        )
        keys = store.list()
        assert not any(k.startswith(f"bm25/kb{alpha.pk}/g2/") for k in keys)
        assert any(k.startswith(f"bm25/kb{alpha.pk}/g1/") for k in keys)
        # Each host kept its own cache: D has alpha's index, A never searched it.
        assert (tmp_path / "web-d" / "bm25" / f"kb{alpha.pk}" / "g1" / "meta.json").exists()
        assert not (tmp_path / "web-a" / "bm25" / f"kb{alpha.pk}" / "g1").exists()
        print(f"{len(outcomes)} searches on D, generations served {sorted(served)}")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for log in logs:
            log.close()
