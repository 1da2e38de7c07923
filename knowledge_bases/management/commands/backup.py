"""manage.py backup DIR: a consistent copy of the installation while it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from knowledge_bases.backup import BackupError, backup, environment_note


class Command(BaseCommand):
    help = (
        "Back up the database, the uploads and every kept generation's indexes into DIR "
        "(new or empty), consistently, while the app runs; `restore DIR` brings it back."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            summary = backup(options["directory"], say=self.stdout.write)
        except (BackupError, OSError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"backed up {summary.documents} documents and {summary.generations} generations: "
            f"{summary.files} files, {summary.bytes / 2**20:.1f} MiB in {options['directory']}"
        )
        note = environment_note()
        if note:
            self.stdout.write(f"note: {note}")
