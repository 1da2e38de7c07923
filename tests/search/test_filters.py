from __future__ import annotations

import re

import pytest

from search.ranking.filters import SearchFilter, metadata_token, metadata_tokens

HOSTILE = ["' OR 1=1 --", "x') OR (1=1", "\\'; DROP TABLE t; --", "a\x00b", "]); --"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_never_reach_the_filter_string(value: str) -> None:
    where = SearchFilter.build(
        document_ids=[3, 1], metadata={value[:10] or "k": value}
    ).lance_where()
    assert where is not None
    assert value not in where and "OR" not in where and "--" not in where
    # Only integers and quoted hex digests besides the fixed syntax.
    stripped = re.sub(r"'[0-9a-f]{32}'", "", where)
    assert re.fullmatch(r"document_id IN \(1, 3\) AND array_has_any\(meta_kv, \[\]\)", stripped)


def test_tokens_are_canonical_across_types() -> None:
    assert metadata_token("year", 2020) == metadata_token("year", 2020.0)
    assert metadata_token("year", 2020) != metadata_token("year", "2020")
    assert metadata_token("flag", True) != metadata_token("flag", 1)
    assert metadata_token("x", float("nan")) is None


def test_metadata_tokens_flatten_nested_keys_and_lists() -> None:
    tokens = set(metadata_tokens({"source": {"kind": "paper"}, "tags": ["a", "b"], "n": None}))
    assert metadata_token("source.kind", "paper") in tokens
    assert {metadata_token("tags", "a"), metadata_token("tags", "b")} <= tokens
    assert len(tokens) == 3


def test_in_conditions_or_their_values_and_keys_and_together() -> None:
    f = SearchFilter.build(metadata={"topic": ["a", "b"], "year": 2020})
    where = f.lance_where() or ""
    assert where.count("array_has_any") == 2
    assert where.count("'") == 2 * 3  # three tokens, quoted
    assert SearchFilter().lance_where() is None and SearchFilter().empty
    assert SearchFilter.build(metadata={"x": float("inf")}).impossible()
