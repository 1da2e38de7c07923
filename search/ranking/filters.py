"""Search filters: validated structures compiled into LanceDB and tantivy queries.

No user text ever reaches a filter string. Document ids are integers; metadata conditions
become *tokens*, a hash of (key, canonical value), stored with every chunk (LanceDB
``meta_kv`` list column, tantivy raw ``meta_kv`` field), so a filter string holds only
integers and hex digests whatever the user sent (``' OR 1=1 --`` included)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

Scalar = str | int | float | bool

MAX_FLATTEN_DEPTH = 3


def _canonical(value: Scalar) -> str | None:
    if isinstance(value, bool):
        return "b:" + ("true" if value else "false")
    if isinstance(value, int):
        return f"n:{value}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return f"n:{int(value)}" if value.is_integer() else f"n:{value!r}"
    if isinstance(value, str):
        return "s:" + value
    return None


def metadata_token(key: str, value: Scalar) -> str | None:
    canonical = _canonical(value)
    if canonical is None:
        return None
    raw = f"{key}\x1f{canonical}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def metadata_tokens(metadata: Mapping[str, Any]) -> list[str]:
    """Tokens for every scalar in a chunk's metadata: nested objects give dotted keys
    (``{"a": {"b": 1}}`` -> ``a.b``), lists give one token per scalar element (so an
    equality filter on a list-valued key means "contains")."""
    tokens: set[str] = set()

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, Mapping):
            if depth < MAX_FLATTEN_DEPTH:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)
        elif isinstance(value, list | tuple):
            for item in value:
                if not isinstance(item, Mapping | list | tuple):
                    walk(prefix, item, depth)
        elif prefix and value is not None:
            token = metadata_token(prefix, value)
            if token is not None:
                tokens.add(token)

    walk("", metadata, 0)
    return sorted(tokens)


@dataclass(frozen=True)
class MetadataCondition:
    """``key`` equals one of ``values`` (one value: equality; several: ``in``)."""

    key: str
    values: tuple[Scalar, ...]

    def tokens(self) -> list[str]:
        return sorted({t for v in self.values if (t := metadata_token(self.key, v)) is not None})


def versions_predicate(keys: Iterable[tuple[int, int]], *, with_versions: bool) -> str:
    """A LanceDB predicate matching the rows of these (document, version) pairs; rows
    without a version column are version 1, so there the document id alone says it."""
    pairs = sorted({(int(d), int(v)) for d, v in keys})
    if not with_versions:
        return f"document_id IN ({', '.join(str(d) for d, _v in pairs)})"
    return " OR ".join(f"(document_id = {d} AND version = {v})" for d, v in pairs)


def versions_query(keys: Iterable[tuple[int, int]], schema: Any, *, with_versions: bool) -> Any:
    """A tantivy query matching the documents of these (document, version) pairs."""
    import tantivy

    pairs = sorted({(int(d), int(v)) for d, v in keys})
    if not with_versions:
        return tantivy.Query.term_set_query(schema, "document_id", [d for d, _v in pairs])
    return tantivy.Query.boolean_query(
        [
            (
                tantivy.Occur.Should,
                tantivy.Query.boolean_query(
                    [
                        (tantivy.Occur.Must, tantivy.Query.term_query(schema, "document_id", d)),
                        (tantivy.Occur.Must, tantivy.Query.term_query(schema, "version", v)),
                    ]
                ),
            )
            for d, v in pairs
        ]
    )


@dataclass(frozen=True)
class SearchFilter:
    document_ids: tuple[int, ...] = ()
    metadata: tuple[MetadataCondition, ...] = field(default_factory=tuple)
    # Document versions written but not visible (being written, or replaced and awaiting
    # deletion): never part of a result, whatever else the filter says.
    hidden: tuple[tuple[int, int], ...] = ()
    # No document can match (document conditions that exclude every one).
    nothing: bool = False

    @classmethod
    def build(
        cls,
        *,
        document_ids: Iterable[int] | None = None,
        metadata: Mapping[str, Scalar | Sequence[Scalar]] | None = None,
    ) -> SearchFilter:
        conditions = []
        for key, value in (metadata or {}).items():
            values = tuple(value) if isinstance(value, list | tuple) else (value,)
            conditions.append(MetadataCondition(key=key, values=values))
        return cls(
            document_ids=tuple(sorted({int(d) for d in document_ids or ()})),
            metadata=tuple(conditions),
        )

    @property
    def empty(self) -> bool:
        return not (self.document_ids or self.metadata or self.hidden or self.nothing)

    def hiding(self, keys: Iterable[tuple[int, int]]) -> SearchFilter:
        """This filter, also leaving out these document versions."""
        hidden = tuple(sorted({*self.hidden, *((int(d), int(v)) for d, v in keys)}))
        return replace(self, hidden=hidden)

    def within_documents(self, ids: Iterable[int]) -> SearchFilter:
        """This filter, also limited to these documents (none: nothing matches)."""
        chosen = {int(d) for d in ids}
        if self.document_ids:
            chosen &= set(self.document_ids)
        return replace(self, document_ids=tuple(sorted(chosen)), nothing=not chosen)

    def impossible(self) -> bool:
        """A condition no row can meet (every value of one key unusable, e.g. NaN, or no
        document left to search)."""
        return self.nothing or any(not c.tokens() for c in self.metadata)

    def lance_where(self, *, with_versions: bool = True) -> str | None:
        """A LanceDB SQL predicate made of integers and hex digests only."""
        parts: list[str] = []
        if self.hidden:
            parts.append(f"NOT ({versions_predicate(self.hidden, with_versions=with_versions)})")
        if self.document_ids:
            parts.append(f"document_id IN ({', '.join(str(int(d)) for d in self.document_ids)})")
        for condition in self.metadata:
            tokens = condition.tokens()
            assert all(t.isalnum() for t in tokens)  # hex digests: nothing to escape
            quoted = ", ".join(f"'{t}'" for t in tokens)
            parts.append(f"array_has_any(meta_kv, [{quoted}])")
        return " AND ".join(parts) or None

    def tantivy_query(self, schema: Any, *, with_versions: bool = True) -> Any | None:
        """A tantivy query built from terms (never parsed from text)."""
        import tantivy

        clauses: list[tuple[Any, Any]] = []
        if self.hidden:
            hidden = versions_query(self.hidden, schema, with_versions=with_versions)
            clauses.append((tantivy.Occur.MustNot, hidden))
            clauses.append((tantivy.Occur.Must, tantivy.Query.all_query()))
        if self.document_ids:
            clauses.append(
                (
                    tantivy.Occur.Must,
                    tantivy.Query.term_set_query(schema, "document_id", list(self.document_ids)),
                )
            )
        for condition in self.metadata:
            clauses.append(
                (
                    tantivy.Occur.Must,
                    tantivy.Query.term_set_query(schema, "meta_kv", condition.tokens()),
                )
            )
        return tantivy.Query.boolean_query(clauses) if clauses else None
