"""Conditions on a chunk's metadata that the engines cannot index (comparisons, text
matches, emptiness, compound and/or), checked on the ranked candidates: what Dify's
metadata conditions and OpenAI's vector-store filters ask for. Equality and membership
also go to the engines (search/ranking/filters.py) where they can."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

# Operators: equality, order, membership, text, emptiness; ``before``/``after`` compare
# dates (ISO 8601 text or Unix seconds).
OPERATORS = frozenset(
    {
        "eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "not_contains",
        "starts_with", "ends_with", "empty", "not_empty", "before", "after",
    }
)  # fmt: skip
MAX_DEPTH = 8
MAX_CONDITIONS = 64


class PredicateError(ValueError):
    """A condition that cannot be checked (unknown operator, wrong value); the message says
    which, for the caller."""


@dataclass(frozen=True)
class Comparison:
    key: str
    op: str
    value: Any = None

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return _compare(_lookup(metadata, self.key), self.op, self.value)


@dataclass(frozen=True)
class Compound:
    op: str  # and | or
    conditions: tuple[Predicate, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.op == "and":
            return all(c.matches(metadata) for c in self.conditions)
        return any(c.matches(metadata) for c in self.conditions)


Predicate = Comparison | Compound


def comparison(key: str, op: str, value: Any = None) -> Comparison:
    if op not in OPERATORS:
        raise PredicateError(f"unknown comparison operator {op!r}")
    if not isinstance(key, str) or not key or len(key) > 200:
        raise PredicateError("a condition's key must be 1 to 200 characters")
    if op in ("in", "nin") and not isinstance(value, list | tuple):
        raise PredicateError(f"{op!r} needs a list of values")
    return Comparison(key, op, tuple(value) if isinstance(value, list) else value)


def compound(op: str, conditions: Sequence[Predicate]) -> Compound:
    if op not in ("and", "or"):
        raise PredicateError(f"a compound condition is 'and' or 'or', not {op!r}")
    if not conditions:
        raise PredicateError("a compound condition needs at least one condition")
    if len(conditions) > MAX_CONDITIONS:
        raise PredicateError(f"at most {MAX_CONDITIONS} conditions")
    return Compound(op, tuple(conditions))


def _lookup(metadata: Mapping[str, Any], key: str) -> Any:
    if key in metadata:
        return metadata[key]
    value: Any = metadata
    for part in key.split("."):  # nested keys, dotted
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _moment(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return _number(value)
    return None


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, list):
        return any(_equal(item, expected) for item in actual)
    a, e = _number(actual), _number(expected)
    if a is not None and e is not None and not isinstance(actual, str | bool):
        return a == e
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual == expected
    return str(actual) == str(expected) if actual is not None else False


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "empty":
        return actual is None or actual == "" or actual == [] or actual == {}
    if op == "not_empty":
        return not _compare(actual, "empty", expected)
    if op == "eq":
        return _equal(actual, expected)
    if op == "ne":
        return not _equal(actual, expected)
    if op == "in":
        return any(_equal(actual, v) for v in expected)
    if op == "nin":
        return not any(_equal(actual, v) for v in expected)
    if actual is None:
        return False
    if op in ("contains", "not_contains"):
        if isinstance(actual, list):
            found = any(_equal(item, expected) for item in actual)
        else:
            found = str(expected).lower() in str(actual).lower()
        return found if op == "contains" else not found
    if op == "starts_with":
        return str(actual).lower().startswith(str(expected).lower())
    if op == "ends_with":
        return str(actual).lower().endswith(str(expected).lower())
    if op in ("before", "after"):
        a, e = _moment(actual), _moment(expected)
        if a is None or e is None:
            return False
        return a < e if op == "before" else a > e
    a, e = _number(actual), _number(expected)
    if a is None or e is None:
        if isinstance(actual, str) and isinstance(expected, str):  # text order
            a_text, e_text = actual, expected
            return {
                "gt": a_text > e_text,
                "gte": a_text >= e_text,
                "lt": a_text < e_text,
                "lte": a_text <= e_text,
            }[op]
        return False
    return {"gt": a > e, "gte": a >= e, "lt": a < e, "lte": a <= e}[op]
