"""Run the web server and a django-q2 worker together; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


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
