"""manage.py search --kb SLUG "query" [--mode M] [--limit N] [--offset N] [--generation N]
[--fusion F] [--json]"""

from __future__ import annotations

import argparse
import html
import json
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from pydantic import ValidationError as PydanticError

from knowledge_bases.selectors import knowledge_base_for_operator
from ragstudio.cli import bounded_int
from ragstudio.core.bounds import GENERATION_NUMBER, SEARCH_LIMIT, SEARCH_OFFSET
from ragstudio.core.errors import RagStudioError
from ragstudio.core.vocabulary import DEFAULT_FUSION, DEFAULT_MODE, FUSION_METHODS, SEARCH_MODES
from search.schemas import SearchIn, SearchOut
from search.services import knowledge_base_search

_MARK = re.compile(r"</?mark>")


class Command(BaseCommand):
    help = "Search a knowledge base from the command line (the API's search, same rules)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("query")
        parser.add_argument("--kb", required=True, metavar="SLUG")
        parser.add_argument("--mode", choices=SEARCH_MODES, default=DEFAULT_MODE)
        parser.add_argument("--limit", type=bounded_int(SEARCH_LIMIT), default=10)
        parser.add_argument("--offset", type=bounded_int(SEARCH_OFFSET), default=0)
        parser.add_argument(
            "--generation",
            type=bounded_int(GENERATION_NUMBER),
            default=None,
            help="default: active",
        )
        parser.add_argument("--fusion", choices=FUSION_METHODS, default=DEFAULT_FUSION)
        parser.add_argument("--json", action="store_true", help="print the API's JSON body")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            kb = knowledge_base_for_operator(options["kb"])
        except RagStudioError as exc:
            raise CommandError(exc.message) from None
        try:
            payload = SearchIn(
                query=options["query"],
                mode=options["mode"],
                limit=options["limit"],
                offset=options["offset"],
                generation=options["generation"] or "active",
                fusion=options["fusion"],
            )
        except PydanticError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "query"
            raise CommandError(f"invalid {field}: {first['msg']}") from None
        try:
            outcome = knowledge_base_search(kb=kb, params=payload.to_params())
        except RagStudioError as exc:
            raise CommandError(exc.message) from None
        body = SearchOut.from_orm(outcome).dict()
        if options["json"]:
            self.stdout.write(json.dumps(body, indent=2, ensure_ascii=False))
            return
        fusion = f", {body['fusion']}" if body["fusion"] else ""
        self.stdout.write(
            f"{len(body['results'])} results from {kb.slug} generation {body['generation']} "
            f"({body['mode']}{fusion}) in {body['took_ms']:.1f} ms"
        )
        for i, hit in enumerate(body["results"], start=options["offset"] + 1):
            c = hit["citation"]
            where = f"{c['filename']}, chunk {c['chunk']}" + (
                f"/{c['chunks']}" if c["chunks"] else ""
            )
            if c["page"]:
                where += f", page {c['page']}"
            snippet = html.unescape(_MARK.sub("**", hit["snippet"]))
            self.stdout.write(f"{i:>3}. {hit['score']:.4f}  {c['title'] or '(untitled)'} ({where})")
            self.stdout.write(f"     {snippet}")
