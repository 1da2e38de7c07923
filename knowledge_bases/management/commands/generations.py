"""manage.py generations SLUG list [--json] | promote N | rollback | gc"""

from __future__ import annotations

import argparse
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from knowledge_bases.lifecycle import generation_promote, generation_rollback, generations_gc
from knowledge_bases.models import KnowledgeBase
from ragstudio.errors import RagStudioError


class Command(BaseCommand):
    help = "List, promote, roll back and collect a knowledge base's generations."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("slug")
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list")
        listing.add_argument("--json", action="store_true")
        promote = sub.add_parser("promote")
        promote.add_argument("number", type=int)
        sub.add_parser("rollback")
        sub.add_parser("gc")

    def handle(self, *args: Any, **options: Any) -> None:
        kb = KnowledgeBase.objects.filter(slug=options["slug"]).first()
        if kb is None:
            raise CommandError(f"no knowledge base {options['slug']!r}")
        try:
            if options["action"] == "list":
                self._list(kb, as_json=options["json"])
            elif options["action"] == "promote":
                generation = generation_promote(kb=kb, number=options["number"])
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

    def _list(self, kb: KnowledgeBase, *, as_json: bool) -> None:
        rows = [
            {
                "number": g.number,
                "status": g.status,
                "chunks": g.chunk_count,
                "fingerprint": g.embedder_fingerprint,
                "active": g.pk == kb.active_generation_id,
            }
            for g in kb.generations.order_by("-number")
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
