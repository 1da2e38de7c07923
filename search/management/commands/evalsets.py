"""manage.py evalsets --kb SLUG list | import NAME FILE.jsonl | run NAME [--generation N]
[--json] | compare NAME A B [--json]"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from knowledge_bases.generations import generation_searchable_get
from knowledge_bases.models import KnowledgeBase
from knowledge_bases.selectors import knowledge_base_for_operator
from ragstudio.cli import bounded_int
from ragstudio.core.bounds import EVAL_IMPORT_MAX_BYTES, GENERATION_NUMBER
from ragstudio.core.errors import RagStudioError
from ragstudio.core.vocabulary import METRIC_LABELS, METRICS, SEARCH_MODES
from search.evaluation import evaluation_compare, evaluation_import, evaluation_run
from search.models import EvaluationRun
from search.selectors import evaluation_set_get, evaluation_sets_of, latest_runs


class Command(BaseCommand):
    help = "Evaluation sets of a knowledge base: import, run on a generation, compare."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kb", required=True, help="slug or owner~slug")
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        importing = sub.add_parser("import", help="import a JSON Lines file into a set")
        importing.add_argument("name")
        importing.add_argument("file", type=Path)
        run = sub.add_parser("run", help="evaluate a generation (default: the active one)")
        run.add_argument("name")
        run.add_argument("--generation", type=bounded_int(GENERATION_NUMBER), default=None)
        run.add_argument("--json", action="store_true")
        compare = sub.add_parser("compare", help="per-query changes between two generations")
        compare.add_argument("name")
        compare.add_argument("a", type=bounded_int(GENERATION_NUMBER))
        compare.add_argument("b", type=bounded_int(GENERATION_NUMBER))
        compare.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            kb = knowledge_base_for_operator(options["kb"])
            action = options["action"]
            if action == "list":
                self._list(kb)
            elif action == "import":
                self._import(kb, options["name"], options["file"])
            elif action == "run":
                self._run(kb, options["name"], options["generation"], as_json=options["json"])
            else:
                self._compare(kb, options, as_json=options["json"])
        except RagStudioError as exc:
            raise CommandError(exc.message) from None

    def _list(self, kb: KnowledgeBase) -> None:
        for s in evaluation_sets_of(kb):
            self.stdout.write(
                f"{s.name:<24} {s.query_count:>6} queries  {s.judged_count:>6} judged"  # type: ignore[attr-defined]
            )

    def _import(self, kb: KnowledgeBase, name: str, path: Path) -> None:
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        if path.stat().st_size > EVAL_IMPORT_MAX_BYTES:
            raise CommandError(f"{path}: larger than {EVAL_IMPORT_MAX_BYTES:,} bytes")
        with open(path, "rb") as fh:
            evaluation_set, result = evaluation_import(
                kb=kb, name=name, chunks=iter(lambda: fh.read(1 << 20), b"")
            )
        self.stdout.write(
            f"{evaluation_set.name}: {result.queries_added} queries added, "
            f"{result.queries_updated} updated, {result.judgements} judgements"
        )

    def _run(self, kb: KnowledgeBase, name: str, number: int | None, *, as_json: bool) -> None:
        evaluation_set = evaluation_set_get(kb=kb, name=name)
        generation = generation_searchable_get(kb, number)
        run = evaluation_run(evaluation_set=evaluation_set, generation=generation)
        if as_json:
            self.stdout.write(json.dumps(_run_json(run), indent=2))
            return
        self.stdout.write(
            f"{name} on generation {generation.number}: {run.queries} queries "
            f"in {run.seconds:.1f} s (hybrid: {run.fusion})"
        )
        self.stdout.write(f"{'mode':<8} " + " ".join(f"{METRIC_LABELS[m]:>10}" for m in METRICS))
        for mode in SEARCH_MODES:
            values = " ".join(f"{run.metrics[mode][m]:>10.4f}" for m in METRICS)
            self.stdout.write(f"{mode:<8} {values}")

    def _compare(self, kb: KnowledgeBase, options: dict[str, Any], *, as_json: bool) -> None:
        evaluation_set = evaluation_set_get(kb=kb, name=options["name"])
        runs = latest_runs(
            kb=kb, evaluation_set=evaluation_set, numbers=(options["a"], options["b"])
        )
        comparison = evaluation_compare(run_a=runs[0], run_b=runs[1])
        if as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "a": _run_json(runs[0]),
                        "b": _run_json(runs[1]),
                        "better": [d.__dict__ for d in comparison.better],
                        "worse": [d.__dict__ for d in comparison.worse],
                        "unchanged": comparison.unchanged,
                    },
                    indent=2,
                )
            )
            return
        self.stdout.write(
            f"hybrid nDCG@10 from #{options['a']} to #{options['b']}: "
            f"{len(comparison.better)} better, {len(comparison.worse)} worse, "
            f"{comparison.unchanged} unchanged"
        )
        for label, items in (("worse", comparison.worse), ("better", comparison.better)):
            for d in items[:10]:
                self.stdout.write(f"  {label:<6} {d.delta:+.3f}  {d.query[:80]}")


def _run_json(run: EvaluationRun) -> dict[str, Any]:
    return {
        "evaluation_set": run.evaluation_set.name,
        "generation": run.generation.number,
        "queries": run.queries,
        "fusion": run.fusion,
        **{mode: run.metrics[mode] for mode in SEARCH_MODES},
    }
