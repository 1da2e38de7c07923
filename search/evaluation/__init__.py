"""Evaluation sets (``sets``), their runs on a generation (``runs``), two runs compared
query by query (``compare``), and the quality gate before promotion (``gate``)."""

from search.evaluation.compare import (
    Comparison,
    QueryDelta,
    comparison_detail,
    evaluation_compare,
)
from search.evaluation.gate import quality_gate_measure
from search.evaluation.runs import (
    EVAL_POOL,
    evaluation_run,
    evaluation_run_execute,
    evaluation_run_request,
    evaluation_runs_abandoned_fail,
)
from search.evaluation.sets import (
    AddResult,
    Mark,
    QueryIn,
    evaluation_import,
    evaluation_queries_add,
    evaluation_set_create,
    evaluation_set_delete,
    evaluation_set_get_or_create,
    judgement_mark,
)

__all__ = [
    "EVAL_POOL",
    "AddResult",
    "Comparison",
    "Mark",
    "QueryDelta",
    "QueryIn",
    "comparison_detail",
    "evaluation_compare",
    "evaluation_import",
    "evaluation_queries_add",
    "evaluation_run",
    "evaluation_run_execute",
    "evaluation_run_request",
    "evaluation_runs_abandoned_fail",
    "evaluation_set_create",
    "evaluation_set_delete",
    "evaluation_set_get_or_create",
    "judgement_mark",
    "quality_gate_measure",
]
