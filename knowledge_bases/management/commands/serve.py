"""Run the web server (gunicorn, N worker processes) and a django-q2 cluster together;
Ctrl-C or SIGTERM stops both. ``--no-cluster`` (a web host) or ``--no-web`` (a worker host)
run one half, for installations spread over several hosts (docs/deploy.md)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from ragstudio.readiness import preload_in_background

# The cluster gets this long to stop its workers after SIGTERM; then the whole group is
# killed. A task cut short is resumable: its job's heartbeat goes stale and the reaper
# queues it again (every write is an idempotent upsert).
CLUSTER_STOP_GRACE = 5.0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """In the cluster's process, before exec: SIGTERM it if serve dies (even SIGKILLed)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def metrics_dir_prepare() -> Path:
    """An empty directory where every web and worker process started from here writes its
    metrics, so /metrics answers for all of them (prometheus-client's multiprocess mode;
    the children read the variable when they start)."""
    directory = Path(settings.DATA_DIR) / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def start_cluster() -> subprocess.Popen:
    """qcluster in a session of its own: Ctrl-C reaches the terminal's whole foreground
    group, and a cluster that got it too would restart workers it saw die while serve is
    stopping it (seen: four qcluster processes alive a minute after Ctrl-C). serve alone
    decides when and how the cluster stops."""
    # Two malloc arenas: with glibc's default (8 per core) a long job's worker grows with
    # the threads that allocate in it.
    env = {"MALLOC_ARENA_MAX": "2", **os.environ}
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def stop_cluster(proc: subprocess.Popen, grace: float = CLUSTER_STOP_GRACE) -> None:
    """SIGTERM to the cluster's group, then SIGKILL to whatever of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers the cluster did not stop in time
    proc.wait()


def start_gunicorn(addrport: str, workers: int, timeout: int, threads: int = 1) -> subprocess.Popen:
    """gunicorn in serve's own process group (a Ctrl-C reaches it too); each worker loads
    the models before it takes a request (ragstudio.gunicorn_conf). Threaded workers: a
    slow client (a request trickling in a byte a second) holds a thread, not a process."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "ragstudio.wsgi:application",
        "--config",
        "python:ragstudio.gunicorn_conf",
        "--bind",
        addrport,
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--timeout",
        str(timeout),
        "--graceful-timeout",
        str(int(CLUSTER_STOP_GRACE)),
    ]
    return subprocess.Popen(
        command, preexec_fn=_die_with_parent if sys.platform == "linux" else None
    )


def stop_gunicorn(proc: subprocess.Popen) -> None:
    """SIGTERM (finish requests in flight), then SIGKILL after the grace."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=CLUSTER_STOP_GRACE + 1)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def announce_when_ready(addrport: str, write: Any, timeout: float = 600.0) -> None:
    """Once the web answers /readyz: where to go, and the demo sign-in if there is one,
    as the last lines of start-up (they would scroll away under the start-up logs)."""
    host, _, port = addrport.rpartition(":")
    base = f"http://{host or '127.0.0.1'}:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.5)  # waiting for our own server to start, bounded by the deadline
    else:
        return
    lines = [f"RAG Studio is ready at {base}/"]
    credentials = Path(settings.DATA_DIR) / "demo-credentials.txt"
    with contextlib.suppress(OSError, ValueError):
        name, password = credentials.read_text().split()
        lines.append(f"Sign in as {name} / {password}")
    lines.append("Ctrl-C stops the server and the worker.")
    write("\n".join(lines))


class Command(BaseCommand):
    help = (
        "Serve the app on ADDR:PORT: gunicorn (RAGSTUDIO_WEB_WORKERS processes of "
        "RAGSTUDIO_WEB_THREADS threads) and a "
        "django-q2 cluster; --dev uses Django's development server instead."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument(
            "--workers", type=int, default=None, help="web processes (RAGSTUDIO_WEB_WORKERS)"
        )
        parser.add_argument("--no-cluster", action="store_true", help="web only: no worker")
        parser.add_argument("--no-web", action="store_true", help="the worker cluster only")
        parser.add_argument(
            "--dev", action="store_true", help="Django's development server, not gunicorn"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["no_cluster"] and options["no_web"]:
            raise CommandError("--no-cluster and --no-web together leave nothing to run")
        workers = options["workers"] or settings.WEB_WORKERS
        if not 1 <= workers <= 64:
            raise CommandError("--workers must be between 1 and 64")
        # Ctrl-C and SIGTERM (a process manager) both stop the server and the worker, even
        # when started from a shell that ignores SIGINT in background jobs.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        if not options["dev"]:
            metrics_dir_prepare()
        cluster = None if options["no_cluster"] else start_cluster()
        web = None
        if not options["no_web"]:
            threading.Thread(
                target=announce_when_ready,
                args=(options["addrport"], self.stdout.write),
                name="announce",
                daemon=True,
            ).start()
        try:
            if options["no_web"]:
                assert cluster is not None
                cluster.wait()
            elif options["dev"]:
                # The development server has no hook before its first request: the models
                # load in the background (/readyz says when).
                preload_in_background("web")
                call_command(
                    "runserver", options["addrport"], use_reloader=False, insecure_serving=True
                )
            else:
                web = start_gunicorn(
                    options["addrport"], workers, settings.WEB_TIMEOUT, settings.WEB_THREADS
                )
                web.wait()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            # Both halves stop at once: each waits out its own grace in parallel.
            stoppers = [
                threading.Thread(target=stop, args=(proc,))
                for stop, proc in ((stop_gunicorn, web), (stop_cluster, cluster))
                if proc is not None
            ]
            for thread in stoppers:
                thread.start()
            for thread in stoppers:
                thread.join()
