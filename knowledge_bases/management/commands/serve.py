"""Run the web server (gunicorn, N worker processes) and a django-q2 cluster together;
Ctrl-C or SIGTERM stops both. ``--no-cluster`` (a web host) or ``--no-web`` (a worker host)
run one half, for installations spread over several hosts (docs/deploy.md)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from ingestion.embedders import LOCAL_PROVIDERS
from knowledge_bases.generations import embedder_get
from ragstudio.env import rag_settings

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


def _warm_model() -> None:
    spec = rag_settings()["EMBEDDER"]
    if spec in LOCAL_PROVIDERS:  # others may need a network or a key: leave them to first use
        try:
            embedder_get(spec)
        except Exception:  # a broken model shows up in the first search's error instead
            logging.getLogger(__name__).warning("could not preload the model", exc_info=True)


def start_gunicorn(addrport: str, workers: int, timeout: int) -> subprocess.Popen:
    """gunicorn in serve's own process group (a Ctrl-C reaches it too), its workers
    started from a loaded app so they share what was imported before the fork."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "ragstudio.wsgi:application",
            "--bind",
            addrport,
            "--workers",
            str(workers),
            "--timeout",
            str(timeout),
            "--graceful-timeout",
            str(int(CLUSTER_STOP_GRACE)),
            "--access-logfile",
            "-",
        ],
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
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


class Command(BaseCommand):
    help = (
        "Serve the app on ADDR:PORT: gunicorn (RAGSTUDIO_WEB_WORKERS processes) and a "
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
        cluster = None if options["no_cluster"] else start_cluster()
        web = None
        try:
            if options["no_web"]:
                assert cluster is not None
                cluster.wait()
            elif options["dev"]:
                # Load the default model in the background, so the first search does not
                # wait for it (about 2 s); searches that come first load it themselves.
                threading.Thread(target=_warm_model, name="warm-model", daemon=True).start()
                call_command(
                    "runserver", options["addrport"], use_reloader=False, insecure_serving=True
                )
            else:
                web = start_gunicorn(options["addrport"], workers, settings.WEB_TIMEOUT)
                web.wait()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            if web is not None:
                stop_gunicorn(web)
            if cluster is not None:
                stop_cluster(cluster)
