"""manage.py sources --kb SLUG list | add NAME KIND CONFIG_JSON [--schedule MIN]
[--keep-missing] | sync ID | remove ID"""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ingestion.foreground import run_in_foreground
from ingestion.selectors import source_get, sources_of
from ingestion.services import source_create, source_delete, source_sync
from knowledge_bases.selectors import knowledge_base_for_operator
from ragstudio.cli import bounded_int
from ragstudio.core.bounds import SOURCE_SCHEDULE_MINUTES
from ragstudio.core.errors import RagStudioError
from ragstudio.core.vocabulary import SOURCE_KINDS


class Command(BaseCommand):
    help = "List, add, sync (in the foreground) and remove a knowledge base's sources."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kb", required=True, help="slug or owner~slug")
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        add = sub.add_parser("add", help="add a source")
        add.add_argument("name")
        add.add_argument("kind", choices=SOURCE_KINDS)
        add.add_argument("config", help='the settings as JSON, e.g. \'{"path": "/srv/docs"}\'')
        add.add_argument(
            "--schedule", type=bounded_int(SOURCE_SCHEDULE_MINUTES), default=60, metavar="MIN"
        )
        add.add_argument(
            "--keep-missing", action="store_true", help="keep removed files' documents"
        )
        sync = sub.add_parser("sync", help="sync now, in the foreground")
        sync.add_argument("id", type=int)
        remove = sub.add_parser("remove", help="remove a source (its documents stay)")
        remove.add_argument("id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            kb = knowledge_base_for_operator(options["kb"])
            action = options["action"]
            if action == "list":
                for s in sources_of(kb):
                    stats = s.last_stats or {}
                    self.stdout.write(
                        f"{s.pk:>4}  {s.name:<20} {s.kind:<7} {s.status:<8} "
                        f"{stats.get('seen', 0)} seen, {stats.get('added', 0)} added, "
                        f"{stats.get('changed', 0)} changed, {stats.get('removed', 0)} removed, "
                        f"{stats.get('failed', 0)} failed"
                    )
            elif action == "add":
                try:
                    config = json.loads(options["config"])
                except json.JSONDecodeError as exc:
                    raise CommandError(f"CONFIG_JSON is not JSON: {exc}") from None
                source = source_create(
                    kb=kb,
                    name=options["name"],
                    kind=options["kind"],
                    config=config,
                    schedule_minutes=options["schedule"],
                    delete_missing=not options["keep_missing"],
                )
                self.stdout.write(f"added source {source.pk} ({source.name})")
            elif action == "sync":
                self._sync(kb, options["id"])
            else:
                source_delete(source=source_get(kb=kb, source_id=options["id"]))
                self.stdout.write(f"removed source {options['id']}")
        except RagStudioError as exc:
            raise CommandError(exc.message) from None

    def _sync(self, kb: Any, source_id: int) -> None:
        source = source_get(kb=kb, source_id=source_id)
        result = source_sync(source_id=source.pk, enqueue=False)
        if result is None:
            raise CommandError(f"source {source.pk} is syncing already")
        source.refresh_from_db()
        if source.last_error:
            raise CommandError(f"sync failed: {source.last_error}")
        stats = result.stats()
        self.stdout.write(
            f"{stats['seen']} seen, {stats['added']} added, {stats['changed']} changed, "
            f"{stats['unchanged']} unchanged, {stats['removed']} removed, "
            f"{stats['failed']} failed in {stats['seconds']} s"
        )
        for failure in stats["failures"]:
            self.stdout.write(f"failed: {failure['item']}: {failure['reason']}")
        if result.job is not None:
            job = run_in_foreground(result.job, stdout=self.stdout, stderr=self.stderr)
            self.stdout.write(
                f"job {job.pk} {job.status}: {job.embedded} embedded, {job.skipped} reused, "
                f"{job.persisted} persisted"
            )
