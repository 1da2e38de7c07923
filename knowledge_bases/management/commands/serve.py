"""Run the web server and a django-q2 worker together; Ctrl-C stops both."""

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

from django.core.management import call_command
from django.core.management.base import BaseCommand

from ingestion.embedders import LOCAL_PROVIDERS
from knowledge_bases.engines import embedder_get
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
    # Two malloc arenas: glibc's default (8 per core) let a long job's worker grow with the
    # threads that allocate in it (measured: peak 572 MiB at 100k chunks vs 480 MiB).
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


class Command(BaseCommand):
    help = "Serve the app on ADDR:PORT with a background worker (embedded defaults)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        # Ctrl-C and SIGTERM (a process manager) both stop the server and the worker, even
        # when started from a shell that ignores SIGINT in background jobs.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        worker = start_cluster()
        # Load the default model in the background, so the first search does not wait for
        # it (about 2 s); searches that come first load it themselves.
        threading.Thread(target=_warm_model, name="warm-model", daemon=True).start()
        try:
            # Static files come from static/ through runserver (no CDN, nothing to collect).
            call_command(
                "runserver", options["addrport"], use_reloader=False, insecure_serving=True
            )
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            stop_cluster(worker)
