"""manage.py kb export SLUG FILE / kb import FILE: one knowledge base, with its documents,
generations and evaluations, out of this installation and into another."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from ingestion.jobs import run_job_and_queue
from ingestion.services.queue import ingestion_job_create
from knowledge_bases.models import Document
from knowledge_bases.selectors import knowledge_base_for_operator
from knowledge_bases.services.transfer import SUFFIX, kb_export, kb_import
from ragstudio.core.errors import RagStudioError


class Command(BaseCommand):
    help = "Export a knowledge base into one archive, or import one."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser(
            "export", help="write a knowledge base into an archive (a .ragkb file)"
        )
        export.add_argument("slug", help="the knowledge base (slug, or owner~slug)")
        export.add_argument("file", type=Path)
        export.add_argument(
            "--all-generations",
            action="store_true",
            help="every retained generation, not only the one that serves",
        )
        imp = sub.add_parser("import", help="create a knowledge base from an archive")
        imp.add_argument("file", type=Path)
        imp.add_argument("--as", dest="slug", default=None, metavar="SLUG")
        imp.add_argument("--owner", default=None, metavar="USER", help="its owner's username")
        imp.add_argument(
            "--documents-only",
            action="store_true",
            help="import the documents and index them again here (for another model)",
        )
        imp.add_argument(
            "--no-index",
            action="store_true",
            help="queue documents that need indexing for the workers instead of indexing them now",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["action"] == "export":
                self._export(options)
            else:
                self._import(options)
        except RagStudioError as exc:
            raise CommandError(exc.message) from None
        except OSError as exc:
            raise CommandError(str(exc)) from None

    def _progress(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - getattr(self, "_said", 0.0) > 2:
            self._said = now
            self.stdout.write(f"  {stage}: {done}/{total}")

    def _export(self, options: dict[str, Any]) -> None:
        kb = knowledge_base_for_operator(options["slug"])
        target: Path = options["file"]
        if target.is_dir():
            target = target / f"{kb.slug}{SUFFIX}"
        started = time.monotonic()
        summary = kb_export(
            kb, target, all_generations=options["all_generations"], progress=self._progress
        )
        self.stdout.write(
            f"exported {kb.slug}: {summary.documents} documents ({summary.versions} versions), "
            f"generations {', '.join(f'#{n}' for n in summary.generations) or 'none'}, "
            f"{summary.chunks} chunks: {summary.bytes / 2**20:.1f} MiB in {summary.path} "
            f"({time.monotonic() - started:.1f} s)"
        )

    def _import(self, options: dict[str, Any]) -> None:
        owner = None
        if options["owner"]:
            owner = get_user_model().objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"no user {options['owner']!r}")
        if not options["file"].is_file():
            raise CommandError(f"{options['file']} is not a file")
        started = time.monotonic()
        result = kb_import(
            options["file"],
            owner=owner,
            slug=options["slug"],
            documents_only=options["documents_only"],
            progress=self._progress,
        )
        self.stdout.write(
            f"imported {result.kb.slug}: {result.documents} documents, generations "
            f"{', '.join(f'#{n}' for n in result.generations) or 'none'}, {result.chunks} "
            f"chunks, 0 embedded ({time.monotonic() - started:.1f} s)"
        )
        if result.pending:
            job = ingestion_job_create(
                kb=result.kb,
                documents=list(Document.objects.filter(pk__in=result.pending)),
                enqueue=options["no_index"],
            )
            if options["no_index"]:
                self.stdout.write(f"{len(result.pending)} documents to index: job {job.pk} queued")
            else:
                self.stdout.write(f"indexing {len(result.pending)} documents (job {job.pk})")
                run_job_and_queue(job.pk)
                job.refresh_from_db()
                self.stdout.write(f"job {job.pk} {job.status}")
