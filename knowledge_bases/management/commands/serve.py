"""Run the web server and a django-q2 worker together; Ctrl-C stops both."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the app on ADDR:PORT with a background worker (embedded defaults)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"])
        try:
            # Static files come from static/ through runserver (no CDN, nothing to collect).
            call_command(
                "runserver", options["addrport"], use_reloader=False, insecure_serving=True
            )
        except KeyboardInterrupt:
            pass
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
