from __future__ import annotations

import pytest

from search.ranking.fusion import FusionParams, adaptive, confidence, fuse, minmax, rrf, weighted

VECTOR = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
LEXICAL = [("c", 12.0), ("d", 6.0), ("a", 3.0)]


def test_rrf_sums_reciprocal_ranks_of_both_engines() -> None:
    fused = {h.chunk_id: h for h in rrf(VECTOR, LEXICAL, k=60)}
    assert fused["a"].score == pytest.approx(1 / 61 + 1 / 63)
    assert fused["c"].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"].score == pytest.approx(1 / 62)
    assert fused["d"].score == pytest.approx(1 / 62)
    assert (fused["a"].vector_rank, fused["a"].bm25_rank) == (1, 3)
    assert fused["d"].vector_rank is None and fused["d"].bm25_score == 6.0


def test_rrf_orders_hits_found_by_both_first_and_breaks_ties_by_best_rank() -> None:
    order = [h.chunk_id for h in rrf(VECTOR, LEXICAL, k=60)]
    assert order[:2] == ["a", "c"]  # equal scores: both have a rank-1 hit; id decides
    assert set(order[2:]) == {"b", "d"}


def test_weighted_scales_each_engine_then_weighs_them() -> None:
    fused = {
        h.chunk_id: h.score for h in weighted(VECTOR, LEXICAL, vector_weight=0.3, bm25_weight=0.7)
    }
    # vector scaled: a=1, b=0.5, c=0; bm25 scaled: c=1, d=1/3, a=0
    assert fused["a"] == pytest.approx(0.3)
    assert fused["c"] == pytest.approx(0.7)
    assert fused["d"] == pytest.approx(0.7 / 3)
    only_bm25 = [h.chunk_id for h in weighted(VECTOR, LEXICAL, vector_weight=0, bm25_weight=1)]
    assert only_bm25[0] == "c"


def test_adaptive_trusts_the_engine_with_a_clear_winner_and_penalises_single_mode_hits() -> None:
    flat_vector = [("a", 0.50), ("b", 0.49), ("c", 0.48), ("d", 0.47)]
    peaked_bm25 = [("d", 20.0), ("c", 2.0), ("b", 1.9), ("a", 1.8)]
    assert confidence([s for _, s in peaked_bm25]) > confidence([s for _, s in flat_vector])
    order = [h.chunk_id for h in adaptive(flat_vector, peaked_bm25)]
    assert order[0] == "d"  # BM25's clear winner beats the vector engine's flat top
    hits = {
        h.chunk_id: h
        for h in adaptive(
            [("x", 0.9), ("y", 0.1)], [("y", 5.0), ("z", 4.0)], single_mode_penalty=0.5
        )
    }
    no_penalty = {
        h.chunk_id: h
        for h in adaptive(
            [("x", 0.9), ("y", 0.1)], [("y", 5.0), ("z", 4.0)], single_mode_penalty=1.0
        )
    }
    assert hits["x"].score == pytest.approx(no_penalty["x"].score * 0.5)
    assert hits["y"].score == pytest.approx(no_penalty["y"].score)


def test_minmax_and_confidence_edge_cases() -> None:
    assert minmax([]) == []
    assert minmax([3.0, 3.0]) == [1.0, 1.0]
    assert confidence([]) == 0.0 and confidence([1.0]) == 1.0 and confidence([2.0, 2.0]) == 0.0


def test_fuse_dispatches_and_rejects_unknown_methods() -> None:
    assert fuse(VECTOR, LEXICAL, FusionParams("rrf", k=1))[0].score == pytest.approx(1 / 2 + 1 / 4)
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse(VECTOR, LEXICAL, FusionParams("magic"))


def test_zscore_standardises_each_engine_over_passages_not_chunks() -> None:
    from search.ranking.fusion import zscore

    # Vector: chunks a1, a2 (passage A) and b1 (passage B), c1 (C). Lexical: passages' scores
    # handed to their chunks, so A's two chunks carry A's score.
    vector = [("a1", 0.9), ("a2", 0.8), ("b1", 0.6), ("c1", 0.3)]
    lexical = [("b1", 10.0), ("a1", 4.0), ("a2", 4.0)]
    units = {"a1": "A", "a2": "A", "b1": "B", "c1": "C"}
    fused = {
        h.chunk_id: h.score
        for h in zscore(vector, lexical, vector_weight=0.5, bm25_weight=0.5, units=units)
    }
    # Vector statistics over the best chunk of A, B, C: 0.9, 0.6, 0.3 (a2 does not count).
    mean_v, sd_v = 0.6, (0.18 / 3) ** 0.5
    # Lexical over B, A: 10, 4.
    mean_b, sd_b = 7.0, 3.0
    z = lambda x, m, s: (x - m) / s  # noqa: E731
    assert fused["a1"] == pytest.approx(0.5 * z(0.9, mean_v, sd_v) + 0.5 * z(4, mean_b, sd_b))
    assert fused["a2"] == pytest.approx(0.5 * z(0.8, mean_v, sd_v) + 0.5 * z(4, mean_b, sd_b))
    # c1 was not found by BM25: it gets BM25's lowest standardised score (A's, -1).
    assert fused["c1"] == pytest.approx(0.5 * z(0.3, mean_v, sd_v) + 0.5 * -1.0)
    # The passage B strongly found by BM25 overtakes A's best chunk.
    order = [
        h.chunk_id for h in zscore(vector, lexical, vector_weight=0.5, bm25_weight=0.5, units=units)
    ]
    assert order[0] == "b1" and order.index("a1") < order.index("a2")


def test_zscore_is_the_default_and_fuse_passes_the_units() -> None:
    units = {"a": "P", "b": "P", "c": "Q", "d": "R"}
    by_default = fuse(VECTOR, LEXICAL, FusionParams(), units)
    explicit = fuse(
        VECTOR, LEXICAL, FusionParams("zscore", vector_weight=0.5, bm25_weight=0.5), units
    )
    assert [h.chunk_id for h in by_default] == [h.chunk_id for h in explicit]
    assert [h.score for h in by_default] == [h.score for h in explicit]


def test_passages_first_shows_distinct_passages_before_second_chunks() -> None:
    from search.ranking.fusion import Fused, passages_first

    hits = [Fused(c, 1.0) for c in ("a1", "a2", "b1", "a3", "c1", "b2", "x")]
    units = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c1": "C"}
    order = [h.chunk_id for h in passages_first(hits, units)]
    assert order == ["a1", "b1", "c1", "x", "a2", "a3", "b2"]  # x: no passage, its own


def _rankings(seed: int) -> tuple[list, list, dict[str, str]]:
    """A vector ranking of chunks and a BM25 ranking of passages' chunks (a passage's
    chunks share its score, so ties abound), overlapping, as a hybrid search makes them."""
    import random

    rng = random.Random(seed)
    passages = {f"p{i}": [f"p{i}c{j}" for j in range(rng.randint(1, 5))] for i in range(60)}
    units = {c: p for p, chunks in passages.items() for c in chunks}
    chunks = list(units)
    vector = sorted(
        (
            (c, round(rng.uniform(0.2, 0.9), rng.choice([1, 2, 6])))
            for c in rng.sample(chunks, rng.randint(0, len(chunks)))
        ),
        key=lambda pair: -pair[1],
    )
    lexical = []
    for p in sorted(rng.sample(list(passages), rng.randint(0, 40)), key=lambda _: rng.random()):
        lexical.append((p, float(rng.choice([3, 5, 8, 13]))))
    lexical.sort(key=lambda pair: -pair[1])
    lexical_chunks = [(c, score) for p, score in lexical for c in passages[p]]
    return vector, lexical_chunks, units


@pytest.mark.parametrize("seed", range(60))
def test_fuse_page_is_exactly_the_page_of_the_full_fusion(seed: int) -> None:
    from search.ranking.fusion import fuse_page, passages_first

    vector, lexical, units = _rankings(seed)
    params = FusionParams(vector_weight=[0.5, 0.3, 0.0, 1.0][seed % 4], bm25_weight=0.5)
    for depth in (1, 10, 37, 1000):
        full = passages_first(fuse(vector, lexical, params, units), units)[:depth]
        page = fuse_page(vector, lexical, params, units, depth)
        assert [
            (h.chunk_id, h.score, h.vector_score, h.vector_rank, h.bm25_score, h.bm25_rank)
            for h in page
        ] == [
            (h.chunk_id, h.score, h.vector_score, h.vector_rank, h.bm25_score, h.bm25_rank)
            for h in full
        ]


def test_fuse_page_falls_back_to_the_full_fusion_where_a_ranking_is_not_best_first() -> None:
    from search.ranking.fusion import fuse_page, passages_first

    unsorted = [("a", 0.2), ("b", 0.9), ("c", 0.5)]
    repeated = [("c", 12.0), ("c", 6.0), ("d", 3.0)]
    not_a_number = [("a", 0.9), ("b", float("nan"))]
    for vector, lexical in ((unsorted, LEXICAL), (VECTOR, repeated), (not_a_number, LEXICAL)):
        full = passages_first(fuse(vector, lexical, FusionParams(), {}), {})[:2]
        page = fuse_page(vector, lexical, FusionParams(), {}, 2)
        assert [(h.chunk_id, repr(h.score)) for h in page] == [
            (h.chunk_id, repr(h.score)) for h in full
        ]
