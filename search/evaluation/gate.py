"""The quality gate: before a new generation may be auto-promoted, the knowledge base's
evaluation sets are run on it and on the active one, and no gated metric may fall by more
than its allowance. The gate measures; the generation's lifecycle records the verdict."""

from __future__ import annotations

from typing import Any

from knowledge_bases.models import Generation
from ragstudio.core.vocabulary import gate_label
from search.evaluation.runs import evaluation_run
from search.selectors import evaluation_sets_of


def quality_gate_measure(
    *, generation: Generation, actor: Any = None
) -> tuple[bool | None, dict[str, Any]]:
    """Evaluate the KB's sets on a new generation and on the active one; a regression is
    any gated metric ("mode:metric" in the KB's quality gate) falling by more than its
    allowance on any set. Returns the verdict (None when there is nothing to compare: no
    judged set, no gate, no other active generation) and the report with the numbers;
    the caller records them."""
    kb = generation.knowledge_base
    kb.refresh_from_db()
    active = kb.active_generation
    sets = [s for s in evaluation_sets_of(kb) if s.judged_count]  # type: ignore[attr-defined]
    gate = dict(kb.quality_gate or {})
    report: dict[str, Any] = {
        "gate": gate,
        "active_generation": active.number if active else None,
        "sets": [],
    }
    if not sets or not gate or active is None or active.pk == generation.pk:
        report["note"] = (
            "no evaluation set with judged queries"
            if not sets
            else "no quality gate set"
            if not gate
            else "no other active generation to compare with"
        )
        return None, report
    passed = True
    for evaluation_set in sets:
        new = evaluation_run(evaluation_set=evaluation_set, generation=generation, user=actor)
        base = evaluation_run(evaluation_set=evaluation_set, generation=active, user=actor)
        failures = []
        for key, allowed in sorted(gate.items()):
            mode, _, metric = key.partition(":")
            before, after = base.metrics[mode][metric], new.metrics[mode][metric]
            drop = before - after
            if drop > float(allowed) + 1e-9:
                failures.append(
                    {
                        "metric": key,
                        "active": before,
                        "new": after,
                        "drop": round(drop, 4),
                        "allowed": allowed,
                        "text": f"{gate_label(key)} {before:.3f} -> {after:.3f} "
                        f"(-{drop:.3f}, at most -{float(allowed):.3f})",
                    }
                )
        passed = passed and not failures
        report["sets"].append(
            {
                "name": evaluation_set.name,
                "queries": new.queries,
                "active": base.metrics,
                "new": new.metrics,
                "active_run": base.pk,
                "new_run": new.pk,
                "failures": failures,
            }
        )
    return passed, report
