"""manage.py restore DIR: bring a backup back into a new installation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from knowledge_bases.backup import BackupError, restore


class Command(BaseCommand):
    help = (
        "Restore a backup made by `backup DIR` into this installation, which must be new "
        "(no users, no knowledge bases): its checksums are checked before anything is written."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("directory", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["directory"].is_dir():
            raise CommandError(f"{options['directory']} is not a directory")
        try:
            summary = restore(options["directory"], say=self.stdout.write)
        except (BackupError, OSError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"restored {summary.documents} documents and {summary.generations} generations "
            f"({summary.files} files)"
        )
