"""manage.py generations SLUG list [--json] | rebuild [...] | promote N | rollback | gc"""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ingestion.foreground import run_in_foreground
from knowledge_bases.generations import generations_of, quality_summary
from knowledge_bases.models import KnowledgeBase
from knowledge_bases.selectors import knowledge_base_for_operator
from knowledge_bases.services import (
    generation_promote,
    generation_rebuild_plan,
    generation_rebuild_start,
    generation_rollback,
    generations_gc,
)
from ragstudio.cli import bounded_int
from ragstudio.core import languages
from ragstudio.core.bounds import (
    CHUNK_OVERLAP,
    CHUNK_SIZE,
    EMBED_BATCH_SIZE,
    GENERATION_NUMBER,
    STORE_BATCH_SIZE,
)
from ragstudio.core.errors import RagStudioError
from ragstudio.core.formatting import clock


class Command(BaseCommand):
    help = "List, promote, roll back and collect a knowledge base's generations."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("slug")
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list")
        listing.add_argument("--json", action="store_true")
        promote = sub.add_parser("promote")
        promote.add_argument("number", type=bounded_int(GENERATION_NUMBER))
        promote.add_argument(
            "--override-quality",
            default="",
            metavar="REASON",
            help="promote despite a quality regression (the reason is recorded)",
        )
        rebuild = sub.add_parser("rebuild", help="build a new generation in the foreground")
        rebuild.add_argument("--embedder", default=None)
        rebuild.add_argument("--chunk-size", type=bounded_int(CHUNK_SIZE), default=None)
        rebuild.add_argument("--chunk-overlap", type=bounded_int(CHUNK_OVERLAP), default=None)
        rebuild.add_argument(
            "--language",
            choices=languages.CHOICES,
            default=None,
            help="BM25's stemming (auto: the documents' majority language)",
        )
        rebuild.add_argument(
            "--promote", action="store_true", help="promote it if it passes its check"
        )
        rebuild.add_argument("--store-batch-size", type=bounded_int(STORE_BATCH_SIZE), default=None)
        rebuild.add_argument("--embed-batch-size", type=bounded_int(EMBED_BATCH_SIZE), default=None)
        rebuild.add_argument(
            "--dry-run", action="store_true", help="print the plan only: nothing is embedded"
        )
        rebuild.add_argument("--json", action="store_true", help="the plan as JSON")
        sub.add_parser("rollback")
        sub.add_parser("gc")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            kb = knowledge_base_for_operator(options["slug"])
            if options["action"] == "list":
                self._list(kb, as_json=options["json"])
            elif options["action"] == "rebuild" and options["dry_run"]:
                self._plan(kb, options)
            elif options["action"] == "rebuild":
                self._rebuild(kb, options)
            elif options["action"] == "promote":
                generation = generation_promote(
                    kb=kb, number=options["number"], override_quality=options["override_quality"]
                )
                self.stdout.write(f"generation {generation.number} is active")
            elif options["action"] == "rollback":
                generation = generation_rollback(kb=kb)
                self.stdout.write(f"rolled back: generation {generation.number} is active")
            else:
                result = generations_gc(kb=kb)
                self.stdout.write(
                    f"collected {result['collected'] or 'none'}; "
                    f"files deleted {result['files_deleted'] or 'none'}; "
                    f"compacted {result['compacted']}"
                )
        except RagStudioError as exc:
            raise CommandError(exc.message) from None

    def _plan(self, kb: KnowledgeBase, options: dict[str, Any]) -> None:
        plan = generation_rebuild_plan(
            kb=kb,
            embedder=options["embedder"],
            chunk_size=options["chunk_size"],
            chunk_overlap=options["chunk_overlap"],
            language=options["language"],
        )
        if options["json"]:
            body = {
                **plan.__dict__,
                "settings": [{**s.__dict__, "changed": s.changed} for s in plan.settings],
            }
            self.stdout.write(json.dumps(body, indent=2))
            return
        for change in plan.changes:
            self.stdout.write(f"{change.name}: {change.active} -> {change.new}")
        if not plan.changes:
            self.stdout.write("settings: unchanged")
        eta = "unknown" if plan.eta_seconds is None else clock(plan.eta_seconds)
        disk = "unknown" if plan.disk_bytes is None else f"{plan.disk_bytes / 1e6:,.1f} MB"
        self.stdout.write(
            f"{plan.documents} documents -> {plan.chunks} chunks: {plan.reused} reused, "
            f"{plan.to_embed} to embed; ETA {eta} ({plan.rate_basis}); disk {disk}"
        )
        for failure in plan.failed:
            self.stdout.write(f"would fail: {failure['filename']}: {failure['reason']}")

    def _rebuild(self, kb: KnowledgeBase, options: dict[str, Any]) -> None:
        job = generation_rebuild_start(
            kb=kb,
            embedder=options["embedder"],
            chunk_size=options["chunk_size"],
            chunk_overlap=options["chunk_overlap"],
            language=options["language"],
            auto_promote=options["promote"],
            enqueue=False,
            store_batch_size=options["store_batch_size"],
            embed_batch_size=options["embed_batch_size"],
        )
        self.stdout.write(f"rebuilding into generation {job.generation.number}")
        job = run_in_foreground(job, stdout=self.stdout, stderr=self.stderr)
        generation = job.generation
        generation.refresh_from_db()
        self.stdout.write(
            f"done: generation {generation.number} {generation.status}, {job.total} chunks, "
            f"{job.embedded} embedded, {job.skipped} reused, {job.persisted} persisted "
            f"in {job.duration_seconds or 0:.1f} s"
        )
        if job.status != "succeeded":
            raise CommandError(f"rebuild job {job.pk} {job.status}: {job.error_message}")
        for item in generation.check_report:
            if not item["ok"]:
                self.stdout.write(f"check failed: {item['name']}: {item['detail']}")
        if generation.quality_passed is False:
            self.stdout.write(
                f"quality regression: {quality_summary(generation.quality_report)} "
                f"(promote with --override-quality REASON to serve it anyway)"
            )

    def _list(self, kb: KnowledgeBase, *, as_json: bool) -> None:
        rows = [
            {
                "number": g.number,
                "status": g.status,
                "chunks": g.chunk_count,
                "fingerprint": g.embedder_fingerprint,
                "active": g.pk == kb.active_generation_id,
            }
            for g in generations_of(kb)
        ]
        if as_json:
            self.stdout.write(json.dumps(rows))
            return
        for row in rows:
            marker = "*" if row["active"] else " "
            self.stdout.write(
                f"{marker} #{row['number']:<4} {row['status']:<10} {row['chunks']:>8} chunks  "
                f"{row['fingerprint']}"
            )
