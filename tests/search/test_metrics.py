"""Retrieval metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from search.ranking.metrics import (
    first_occurrences,
    mean_metrics,
    ndcg_at,
    query_metrics,
    recall_at,
    reciprocal_rank,
)


def test_ndcg_with_graded_gains_matches_the_hand_computed_value() -> None:
    # Ranked a, b, c, d; grades b=2, d=1, e=1 (e never retrieved).
    grades = {"b": 2, "d": 1, "e": 1}
    dcg = 2 / math.log2(3) + 1 / math.log2(5)  # b at rank 2, d at rank 4
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # 2, 1, 1 in order
    assert ndcg_at(["a", "b", "c", "d"], grades, 10) == pytest.approx(dcg / idcg)
    assert dcg / idcg == pytest.approx(0.5406, abs=1e-4)  # 1.6926 / 3.1309


def test_ndcg_cuts_at_k_and_ignores_judged_irrelevant_units() -> None:
    grades = {"x": 0, "y": 1}
    assert ndcg_at(["x", "y"], grades, 1) == 0.0  # y is at rank 2, past the cut
    assert ndcg_at(["y", "x"], grades, 1) == 1.0
    assert ndcg_at(["x"], {"x": 0}, 10) == 0.0  # nothing relevant: 0, not a division error


def test_recall_and_mrr() -> None:
    ranked = [f"u{i}" for i in range(200)]
    grades = {"u3": 1, "u50": 2, "u150": 1, "u999": 1, "u7": 0}
    assert recall_at(ranked, grades, 10) == pytest.approx(1 / 4)
    assert recall_at(ranked, grades, 100) == pytest.approx(2 / 4)
    assert reciprocal_rank(ranked, grades) == pytest.approx(1 / 4)  # u3 at rank 4
    assert reciprocal_rank(ranked, {"u150": 1}) == 0.0  # beyond the MRR depth of 100


def test_units_take_the_place_of_their_best_chunk_and_means_average_queries() -> None:
    assert first_occurrences(["d1", "d2", "d1", "d3", "d2"]) == ["d1", "d2", "d3"]
    one = query_metrics(["a", "b"], {"a": 1})
    two = query_metrics(["a", "b"], {"b": 1})
    assert one == {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr": 1.0}
    mean = mean_metrics([one, two])
    assert mean["mrr"] == pytest.approx(0.75)
    assert mean["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
