"""Scaling out on one machine: search throughput by web server and storage, and ingest
throughput by number of worker clusters.

    .venv/bin/python bench/scale.py [--docs 1000] [--seconds 8] [--ingest-docs 300]

Search: SciFact abstracts ingested into one knowledge base (`manage.py ingest`), once with
LanceDB and tantivy in the data directory and once in an S3 API (moto's server on
loopback, each host's data directory then a cache). Each web server in turn --
`manage.py serve --dev` (Django's runserver), gunicorn with 2 and with 4 workers -- gets
hybrid searches (SciFact claims, each new to the server) from 1, 4 and 16 client threads of
this process for --seconds each; queries/s and latency percentiles. The clients share the
machine's two cores with the server.

Ingest: two knowledge bases of --ingest-docs abstracts each, uploaded together, run by one
`manage.py serve --no-web` cluster, then by two; wall time until both jobs finish.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragstudio.testing.s3 import start_s3_server  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise SystemExit(f"error: timed out waiting for {what}")


def manage(env: dict[str, str], *args: str, capture: bool = False) -> str:
    run = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if run.returncode != 0:
        raise SystemExit(f"error: manage.py {' '.join(args)}:\n{run.stderr[-2000:]}")
    return run.stdout


def corpus_files(directory: Path, records: list[dict], per_file: int = 100) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(records), per_file):
        body = "\n".join(
            json.dumps({"id": r["_id"], "title": r["title"], "text": r["text"]})
            for r in records[i : i + per_file]
        )
        (directory / f"scifact-{i // per_file:03d}.jsonl").write_text(body)


def host_env(data: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ragstudio.settings",
        "RAGSTUDIO_DATA_DIR": str(data),
        "RAGSTUDIO_SECRET_KEY": "bench-secret-key-shared-by-every-process-of-this-run",
        "RAGSTUDIO_MODEL_DIR": str(ROOT / "bench" / ".cache" / "models"),
        "RAGSTUDIO_LOG_LEVEL": "WARNING",
        **extra,
    }


def prepare(env: dict[str, str], corpus: Path) -> str:
    """Migrate, ingest the corpus into KB 'bench', and return an API token of a staff user."""
    manage(env, "migrate", "--noinput")
    manage(env, "ingest", "--kb", "bench", "--create", str(corpus))
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model as g; "
        "g().objects.filter(username='bench').exists() or "
        "g().objects.create_user('bench', password='x', is_staff=True)",
    )
    return manage(env, "api_token", "bench", capture=True).strip().split()[-1]


def start_server(env: dict[str, str], port: int, kind: str) -> subprocess.Popen:
    args = [sys.executable, "manage.py", "serve", f"127.0.0.1:{port}", "--no-cluster"]
    if kind == "runserver":
        args.append("--dev")
    else:
        args += ["--workers", kind.split()[-1]]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def up() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/accounts/login/")
            return conn.getresponse().status == 200
        except OSError:
            return False

    wait_until(up, 120, f"{kind} on port {port}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def search(port: int, token: str, query: str) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(
        "POST",
        "/api/kbs/bench/search",
        json.dumps({"query": query, "mode": "hybrid", "limit": 10}),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    return (time.perf_counter() - started) * 1000


def load(port: int, token: str, queries, clients: int, seconds: float) -> dict:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                query = next(queries)
            try:
                ms = search(port, token, query)
            except Exception:
                with lock:
                    errors[0] += 1
                continue
            with lock:
                latencies.append(ms)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    return {
        "qps": len(latencies) / elapsed,
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "n": len(latencies),
        "errors": errors[0],
    }


def ingest_run(work: Path, records: list[dict], clusters: int) -> tuple[float, int]:
    """Two KBs uploaded together, run by ``clusters`` worker clusters: seconds until both
    jobs succeeded."""
    data = work / f"ingest-{clusters}"
    env = host_env(data, RAGSTUDIO_WORKERS="1")
    manage(env, "migrate", "--noinput")
    half = len(records) // 2
    for slug, part in (("left", records[:half]), ("right", records[half:])):
        corpus_files(work / f"upload-{clusters}-{slug}", part)
    procs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--no-web"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(clusters)
    ]
    script = (
        "import time, pathlib\n"
        "from django.contrib.auth import get_user_model\n"
        "from ingestion.services import IncomingFile, documents_upload\n"
        "from ingestion.models import IngestionJob\n"
        "from knowledge_bases.services import knowledge_base_create\n"
        "u = get_user_model().objects.create_user('ingest', is_staff=True)\n"
        "jobs = []\n"
        f"root = pathlib.Path({str(work)!r})\n"
        "started = time.time()\n"
        "for slug in ('left', 'right'):\n"
        "    kb = knowledge_base_create(slug=slug, name=slug, owner=u)\n"
        f"    files = [IncomingFile(name=p.name, chunks=[p.read_bytes()]) for p in sorted((root / f'upload-{clusters}-{{slug}}').iterdir())]\n"
        "    jobs.append(documents_upload(kb=kb, files=files, user=u).job.pk)\n"
        "while IngestionJob.objects.filter(pk__in=jobs, status='succeeded').count() < 2:\n"
        "    time.sleep(0.5)\n"
        "print(time.time() - started, sum(j.total for j in IngestionJob.objects.filter(pk__in=jobs)))\n"
    )
    try:
        out = manage(env, "shell", "-c", script).split()
    finally:
        for proc in procs:
            stop(proc)
    seconds, chunks = float(out[-2]), int(out[-1])
    return seconds, chunks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--ingest-docs", type=int, default=300)
    parser.add_argument("--clients", default="1,4,16")
    args = parser.parse_args()
    if not (SCIFACT / "corpus.jsonl").exists():
        parser.error(f"SciFact not found in {SCIFACT}")
    clients = [int(c) for c in args.clients.split(",")]
    with open(SCIFACT / "corpus.jsonl") as fh:
        records = [json.loads(line) for line in itertools.islice(fh, args.docs)]
    with open(SCIFACT / "queries.jsonl") as fh:
        claims = [json.loads(line)["text"] for line in fh]
    work = Path(tempfile.mkdtemp(prefix="ragstudio-bench-scale-"))
    moto_port = free_port()
    moto_proc = start_s3_server(moto_port, "ragstudio")
    rows = []
    try:
        corpus_files(work / "corpus", records)
        storages = {
            "local": {},
            "object store": {
                "RAGSTUDIO_STORAGE_URI": "s3://ragstudio/bench",
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_REGION": "us-east-1",
            },
        }
        queries = itertools.cycle(claims)
        for storage, extra in storages.items():
            build = host_env(work / f"build-{storage.replace(' ', '-')}", **extra)
            started = time.perf_counter()
            token = prepare(build, work / "corpus")
            print(f"{storage}: built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            for kind in ("runserver", "gunicorn 2", "gunicorn 4"):
                # A web host of its own: with the object store its data directory starts
                # empty (it syncs the index on the first search).
                env = build
                if storage != "local":  # the database is shared, the data directory not
                    database = work / f"build-{storage.replace(' ', '-')}" / "db.sqlite3"
                    env = host_env(
                        work / f"web-{kind.replace(' ', '-')}",
                        DATABASE_URL=f"sqlite:///{database}",
                        **extra,
                    )
                port = free_port()
                server = start_server(env, port, kind)
                try:
                    for _ in range(8):  # every worker loads the model and opens the index
                        search(port, token, next(queries))
                    for n in clients:
                        result = load(port, token, queries, n, args.seconds)
                        rows.append((storage, kind, n, result))
                        print(f"  {kind}, {n} clients: {result}", file=sys.stderr)
                finally:
                    stop(server)
        ingest_records = records[: 2 * args.ingest_docs]
        ingest = [(n, *ingest_run(work, ingest_records, n)) for n in (1, 2)]
    finally:
        stop(moto_proc)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nSearch: SciFact, {args.docs} abstracts, hybrid, limit 10, new claims each time; "
        f"{args.seconds:g} s per row; clients are threads of this process on the same 2 cores\n"
    )
    print("| storage | web server | clients | queries/s | p50 ms | p95 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for storage, kind, n, r in rows:
        print(
            f"| {storage} | {kind} | {n} | {r['qps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['errors']} |"
        )
    print(
        f"\nIngest: two knowledge bases of {args.ingest_docs} abstracts each, uploaded together "
        "(local storage, ORM broker)\n"
    )
    print("| worker clusters | seconds | chunks | chunks/s |")
    print("|---|---|---|---|")
    for n, seconds, chunks in ingest:
        print(f"| {n} | {seconds:.1f} | {chunks} | {chunks / seconds:.1f} |")


if __name__ == "__main__":
    main()
