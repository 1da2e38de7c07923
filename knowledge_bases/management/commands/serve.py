"""Run the web server and a django-q2 worker together; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from knowledge_bases.engines import embedder_get
from ragstudio.env import rag_settings


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _warm_model() -> None:
    spec = rag_settings()["EMBEDDER"]
    if spec == "local":  # others may need a network or a key: leave them to first use
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
        worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"])
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
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
