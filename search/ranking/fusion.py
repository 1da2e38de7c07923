"""Fusing a vector ranking and a BM25 ranking into one (pure functions, no I/O).

- ``rrf``: reciprocal rank fusion, sum of 1 / (k + rank); scale-free.
- ``weighted``: each engine's scores min-max scaled over its candidates, then
  ``vector_weight * v + bm25_weight * b`` (a hit missing from one engine gets 0 there).
- ``adaptive``: like weighted, but each query's weights follow how confident each engine
  is (how far its best score stands above the rest of its top candidates), and a hit
  found by one engine only is multiplied by ``single_mode_penalty``.
- ``zscore`` (the default): each engine's scores standardised over the best chunk of each
  of its top ``Z_DEPTH`` passages (so a passage's many chunks do not weigh its engine's
  statistics), then ``vector_weight * v + bm25_weight * b``; a hit one engine missed gets
  that engine's lowest standardised score. Chosen on SciFact's tuning half
  (bench/quality.py; docs/ranking.md)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from ragstudio.core.vocabulary import DEFAULT_FUSION, FusionMethod

Ranked = Sequence[tuple[str, float]]  # (chunk id, engine score), best first

CONFIDENCE_DEPTH = 10
# Passages each engine's mean and spread are taken over: fixed, so a chunk's fused score
# does not depend on how deep the caller asked (a page of 10 or an evaluation's 300), as
# long as each engine's pool reaches that many passages (search.services.hybrid_pools).
# Fewer passages make noisier statistics; more would need deeper pools on every search for
# little (docs/ranking.md).
Z_DEPTH = 100


@dataclass(slots=True)
class Fused:
    chunk_id: str
    score: float
    vector_score: float | None = None
    vector_rank: int | None = None  # 1-based
    bm25_score: float | None = None
    bm25_rank: int | None = None


@dataclass(frozen=True)
class FusionParams:
    method: FusionMethod = DEFAULT_FUSION
    k: int = 60
    vector_weight: float = 0.5
    bm25_weight: float = 0.5
    single_mode_penalty: float = 0.8


def _collect(vector: Ranked, lexical: Ranked) -> dict[str, Fused]:
    # Positional arguments: a search fuses several hundred candidates, and keyword
    # arguments cost a third of the time it takes to make them.
    hits: dict[str, Fused] = {}
    for rank, (chunk_id, score) in enumerate(vector, start=1):
        if chunk_id not in hits:
            hits[chunk_id] = Fused(chunk_id, 0.0, score, rank, None, None)
    for rank, (chunk_id, score) in enumerate(lexical, start=1):
        hit = hits.get(chunk_id)
        if hit is None:
            hits[chunk_id] = Fused(chunk_id, 0.0, None, None, score, rank)
        elif hit.bm25_rank is None:
            hit.bm25_score, hit.bm25_rank = score, rank
    return hits


_NO_RANK = 1 << 62


def _tie_key(h: Fused) -> tuple[float, int, str]:
    # Ties broken by the better single rank, then the id: the order is deterministic.
    return (-h.score, min(h.vector_rank or _NO_RANK, h.bm25_rank or _NO_RANK), h.chunk_id)


def _sorted(hits: dict[str, Fused]) -> list[Fused]:
    return sorted(hits.values(), key=_tie_key)


def unit_score(fused: float) -> float:
    """A fused hybrid score (z-scores of both engines, about -3 to 6) mapped into 0-1 by
    the logistic function, for clients that expect scores in that range."""
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, fused))))


def minmax(scores: Sequence[float]) -> list[float]:
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if high - low <= 1e-12:
        return [1.0 for _ in scores]
    return [(s - low) / (high - low) for s in scores]


def confidence(scores: Sequence[float], depth: int = CONFIDENCE_DEPTH) -> float:
    """How far the best score stands above the mean of the top ``depth``, relative to
    their range: near 1 for one clear winner, near 0 for a flat list (or none)."""
    top = list(scores[:depth])
    if len(top) < 2:
        return 1.0 if top else 0.0
    spread = top[0] - min(top)
    if spread <= 1e-12:
        return 0.0
    return (top[0] - sum(top) / len(top)) / spread


def rrf(vector: Ranked, lexical: Ranked, *, k: int = 60) -> list[Fused]:
    hits = _collect(vector, lexical)
    for hit in hits.values():
        hit.score = sum(1.0 / (k + r) for r in (hit.vector_rank, hit.bm25_rank) if r is not None)
    return _sorted(hits)


def _scaled(ranked: Ranked) -> dict[str, float]:
    ids = [chunk_id for chunk_id, _ in ranked]
    return dict(zip(ids, minmax([score for _, score in ranked]), strict=True))


def weighted(
    vector: Ranked, lexical: Ranked, *, vector_weight: float, bm25_weight: float
) -> list[Fused]:
    hits = _collect(vector, lexical)
    v, b = _scaled(vector), _scaled(lexical)
    for hit in hits.values():
        hit.score = vector_weight * v.get(hit.chunk_id, 0.0) + bm25_weight * b.get(
            hit.chunk_id, 0.0
        )
    return _sorted(hits)


def adaptive(vector: Ranked, lexical: Ranked, *, single_mode_penalty: float = 0.8) -> list[Fused]:
    cv = confidence([s for _, s in vector])
    cb = confidence([s for _, s in lexical])
    total = cv + cb
    wv, wb = (cv / total, cb / total) if total > 0 else (0.5, 0.5)
    hits = weighted(vector, lexical, vector_weight=wv, bm25_weight=wb)
    for hit in hits:
        if hit.vector_rank is None or hit.bm25_rank is None:
            hit.score *= single_mode_penalty
    return _sorted({h.chunk_id: h for h in hits})


def _z_stats(ranked: Ranked, units: Mapping[str, str], depth: int) -> tuple[float, float] | None:
    """The mean and spread of the best chunks of the first ``depth`` units of a ranking
    (None for an empty one)."""
    best: dict[str, float] = {}
    for chunk_id, score in ranked:
        unit = units.get(chunk_id, chunk_id)
        if unit not in best:
            if len(best) >= depth:
                break
            best[unit] = score
    if not best:
        return None
    values = list(best.values())
    mean = math.fsum(values) / len(values)
    spread = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    return mean, spread if spread > 1e-12 else 1.0


def standardised(
    ranked: Ranked, units: Mapping[str, str], depth: int | None = None
) -> dict[str, float]:
    """Each chunk's score as a z-score against the best chunks of the first ``depth``
    units (passages) of the ranking. A unit missing from ``units`` is the chunk itself."""
    stats = _z_stats(ranked, units, Z_DEPTH if depth is None else depth)
    if stats is None:
        return {}
    mean, spread = stats
    return {chunk_id: (score - mean) / spread for chunk_id, score in ranked}


def zscore(
    vector: Ranked,
    lexical: Ranked,
    *,
    vector_weight: float,
    bm25_weight: float,
    units: Mapping[str, str],
) -> list[Fused]:
    hits = _collect(vector, lexical)
    v, b = standardised(vector, units), standardised(lexical, units)
    floor_v = min(v.values(), default=0.0)
    floor_b = min(b.values(), default=0.0)
    for hit in hits.values():
        hit.score = vector_weight * v.get(hit.chunk_id, floor_v) + bm25_weight * b.get(
            hit.chunk_id, floor_b
        )
    return _sorted(hits)


def fuse(
    vector: Ranked,
    lexical: Ranked,
    params: FusionParams,
    units: Mapping[str, str] | None = None,
) -> list[Fused]:
    """``units``: each chunk's passage (``zscore`` standardises per passage)."""
    if params.method == "zscore":
        return zscore(
            vector,
            lexical,
            vector_weight=params.vector_weight,
            bm25_weight=params.bm25_weight,
            units=units or {},
        )
    if params.method == "rrf":
        return rrf(vector, lexical, k=params.k)
    if params.method == "weighted":
        return weighted(
            vector, lexical, vector_weight=params.vector_weight, bm25_weight=params.bm25_weight
        )
    if params.method == "adaptive":
        return adaptive(vector, lexical, single_mode_penalty=params.single_mode_penalty)
    raise ValueError(f"unknown fusion method {params.method!r}")


def passages_first(hits: Sequence[Fused], units: Mapping[str, str]) -> list[Fused]:
    """Each passage's best hit in order, then the passages' other hits in order: a page
    shows distinct passages before a second chunk of any (passage scores are shared by a
    passage's chunks, which would otherwise fill a page from two or three passages). The
    order of passages, and of documents, is unchanged."""
    seen: set[str] = set()
    first: list[Fused] = []
    rest: list[Fused] = []
    for hit in hits:
        unit = units.get(hit.chunk_id, hit.chunk_id)
        (rest if unit in seen else first).append(hit)
        seen.add(unit)
    return first + rest


def single(ranked: Ranked, *, engine: str) -> list[Fused]:
    """One engine's ranking as fused hits (its own score, its own ranks)."""
    if engine == "vector":
        return [Fused(i, s, vector_score=s, vector_rank=r) for r, (i, s) in enumerate(ranked, 1)]
    return [Fused(i, s, bm25_score=s, bm25_rank=r) for r, (i, s) in enumerate(ranked, 1)]


def _ranks(ranked: Ranked) -> dict[str, int] | None:
    """Each chunk's 1-based rank, or None when a chunk appears twice or the scores are not
    best first, NaN included (what ``fuse_page`` relies on)."""
    ranks = dict(zip([chunk_id for chunk_id, _ in ranked], range(1, len(ranked) + 1), strict=True))
    if len(ranks) != len(ranked):
        return None
    scores = [score for _, score in ranked]
    # "not >=" so that a NaN (never ordered) sends the ranking to the full fusion too.
    if any(not a >= b for a, b in pairwise(scores)) or (scores and math.isnan(scores[-1])):
        return None
    return ranks


def fuse_page(
    vector: Ranked,
    lexical: Ranked,
    params: FusionParams,
    units: Mapping[str, str],
    depth: int,
) -> list[Fused]:
    """``passages_first(fuse(...), units)[:depth]``: the first ``depth`` hits a search shows,
    without scoring and ordering the hundreds of candidates below them. For z-score
    fusion both rankings are read best first, side by side; a candidate read is scored in
    full, and it is placed once no candidate still unread can score as high (the unread
    ones score at most the two engines' next scores together)."""
    v_rank, b_rank = _ranks(vector), _ranks(lexical)
    wv, wb = params.vector_weight, params.bm25_weight
    if params.method != "zscore" or v_rank is None or b_rank is None or min(wv, wb) < 0:
        return passages_first(fuse(vector, lexical, params, units), units)[:depth]
    v_mean, v_spread = _z_stats(vector, units, Z_DEPTH) or (0.0, 1.0)
    b_mean, b_spread = _z_stats(lexical, units, Z_DEPTH) or (0.0, 1.0)

    # The z-score at a position of each ranking; past its end (a candidate that engine
    # missed, or nothing left unread), its lowest: its last one's.
    def z_v(i: int) -> float:
        return (vector[min(i, len(vector) - 1)][1] - v_mean) / v_spread if vector else 0.0

    def z_b(i: int) -> float:
        return (lexical[min(i, len(lexical) - 1)][1] - b_mean) / b_spread if lexical else 0.0

    def score(chunk_id: str) -> float:
        rv, rb = v_rank.get(chunk_id, _NO_RANK), b_rank.get(chunk_id, _NO_RANK)
        return wv * z_v(rv - 1) + wb * z_b(rb - 1)

    heap: list[tuple[float, int, str]] = []
    read: set[str] = set()

    def take(chunk_id: str) -> None:
        if chunk_id not in read:
            read.add(chunk_id)
            best = min(v_rank.get(chunk_id, _NO_RANK), b_rank.get(chunk_id, _NO_RANK))
            heapq.heappush(heap, (-score(chunk_id), best, chunk_id))

    first: list[str] = []
    rest: list[str] = []
    seen: set[str] = set()
    next_v = next_b = 0
    while len(first) < depth and (heap or next_v < len(vector) or next_b < len(lexical)):
        if next_v < len(vector):
            take(vector[next_v][0])
            next_v += 1
        if next_b < len(lexical):
            take(lexical[next_b][0])
            next_b += 1
        unread = next_v < len(vector) or next_b < len(lexical)
        bound = wv * z_v(next_v) + wb * z_b(next_b)
        while heap and len(first) < depth and (not unread or -heap[0][0] > bound):
            chunk_id = heapq.heappop(heap)[2]
            unit = units.get(chunk_id, chunk_id)
            (rest if unit in seen else first).append(chunk_id)
            seen.add(unit)
    # Fewer passages than the page: every candidate was placed; their other hits follow.
    page = first + rest[: depth - len(first)]

    def hit(chunk_id: str) -> Fused:
        rv, rb = v_rank.get(chunk_id), b_rank.get(chunk_id)
        return Fused(
            chunk_id,
            score(chunk_id),
            vector[rv - 1][1] if rv else None,
            rv,
            lexical[rb - 1][1] if rb else None,
            rb,
        )

    return [hit(chunk_id) for chunk_id in page]
