"""One generation's chunks in a LanceDB table, written by idempotent upserts on ``id``."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from ragstudio.core.types import DocumentVersionKey, EmbeddedChunk, Vector
from search.ranking.filters import metadata_tokens, versions_predicate

if TYPE_CHECKING:
    import pyarrow as pa

_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # chunk ids are ours (hex digests); checked anyway


def chunk_schema(dimensions: int) -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("document_id", pa.int64(), nullable=False),
            pa.field("ordinal", pa.int32(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("title", pa.string()),
            pa.field("record_id", pa.string()),
            pa.field("page", pa.int32()),
            pa.field("token_count", pa.int32()),
            pa.field("metadata", pa.string()),
            # Hashed (key, value) tokens of the metadata, for filters (search/ranking/filters.py).
            pa.field("meta_kv", pa.list_(pa.string())),
            # The chunk's passage (search/stores/bm25/), returned with its vector.
            pa.field("parent", pa.string()),
            # The document's version the chunk belongs to (a table of an older release has
            # none: every row there is version 1).
            pa.field("version", pa.int32()),
            pa.field("vector", pa.list_(pa.float32(), dimensions), nullable=False),
        ]
    )


def rows_to_arrow(rows: Sequence[EmbeddedChunk], dimensions: int) -> pa.Table:
    import pyarrow as pa

    vectors = np.asarray([r.vector for r in rows], dtype=np.float32).reshape(-1)
    if vectors.size != len(rows) * dimensions:
        raise ValueError(f"vectors do not have {dimensions} dimensions")
    chunks = [r.chunk for r in rows]
    return pa.Table.from_arrays(
        [
            pa.array([c.id for c in chunks], pa.string()),
            pa.array([c.document_id for c in chunks], pa.int64()),
            pa.array([c.ordinal for c in chunks], pa.int32()),
            pa.array([c.content_hash for c in chunks], pa.string()),
            pa.array([c.text for c in chunks], pa.string()),
            pa.array([c.title for c in chunks], pa.string()),
            pa.array([c.record_id for c in chunks], pa.string()),
            pa.array([c.page for c in chunks], pa.int32()),
            pa.array([c.token_count for c in chunks], pa.int32()),
            pa.array([c.metadata_json() for c in chunks], pa.string()),
            pa.array([metadata_tokens(c.metadata) for c in chunks], pa.list_(pa.string())),
            pa.array([c.parent_id or None for c in chunks], pa.string()),
            pa.array([c.version for c in chunks], pa.int32()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors, pa.float32()), dimensions),
        ],
        schema=chunk_schema(dimensions),
    )


def connect(uri: str, storage_options: dict[str, str] | None = None) -> Any:
    import lancedb

    # interval 0: always see other processes' writes (the default never does).
    if storage_options and "://" in uri:  # an object store (s3://...): how to reach it
        return lancedb.connect(
            uri, read_consistency_interval=timedelta(0), storage_options=storage_options
        )
    return lancedb.connect(uri, read_consistency_interval=timedelta(0))


class LanceChunkTable:
    def __init__(
        self,
        uri: str,
        table_name: str,
        dimensions: int,
        *,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self.table_name = table_name
        self.dimensions = dimensions
        self._db = connect(uri, storage_options)
        self._table: Any = None
        self._columns: frozenset[str] | None = None

    def exists(self) -> bool:
        return self.table() is not None

    def table(self, *, create: bool = False) -> Any:
        if self._table is None:
            try:
                self._table = self._db.open_table(self.table_name)
            except ValueError:  # "Table ... was not found"
                if not create:
                    return None
                self._table = self._db.create_table(
                    self.table_name, schema=chunk_schema(self.dimensions), exist_ok=True
                )
        return self._table

    def write(self, rows: Sequence[EmbeddedChunk]) -> None:
        """One LanceDB write: an append when every row is known to be new, else an upsert.
        merge_insert joins against the whole table, so its cost grows with the table; an
        append does not."""
        if not rows:
            return
        if all(r.new for r in rows):
            table = self.table(create=True)
            table.add(self._fit(table, rows_to_arrow(rows, self.dimensions)))
        else:
            self.upsert(rows)

    @staticmethod
    def _fit(table: Any, data: pa.Table) -> pa.Table:
        """Rows for a table from an older release lack the columns it does not have."""
        names = set(table.schema.names)
        extra = [name for name in data.column_names if name not in names]
        return data.drop_columns(extra) if extra else data

    def _has_column(self, name: str) -> bool:
        """Whether the table has ``name`` (True when there is no table yet: a new one will).
        A table keeps the columns it was made with, and reading its schema costs a quarter
        of a millisecond: asked on every search, it is read once."""
        table = self.table()
        if table is None:
            return True
        if self._columns is None:
            self._columns = frozenset(table.schema.names)
        return name in self._columns

    def supports_metadata_filters(self) -> bool:
        return self._has_column("meta_kv")

    def supports_versions(self) -> bool:
        """False for a table of an older release, whose rows carry no version."""
        return self._has_column("version")

    def version_counts(self) -> dict[DocumentVersionKey, int]:
        """Rows per (document, version)."""
        if not self.exists():
            return {}
        columns = ["document_id", "version"] if self.supports_versions() else ["document_id"]
        data = self._project(columns)
        documents = data.column("document_id").to_pylist()
        versions = (
            data.column("version").to_pylist() if "version" in columns else [1] * len(documents)
        )
        counts: dict[DocumentVersionKey, int] = {}
        for document, version in zip(documents, versions, strict=True):
            key = (int(document), int(version or 1))
            counts[key] = counts.get(key, 0) + 1
        return counts

    def delete_versions(self, keys: Sequence[DocumentVersionKey]) -> None:
        """Remove the rows of these document versions (a table without versions holds
        version 1 of each document only)."""
        table = self.table()
        if table is None or not keys:
            return
        table.delete(versions_predicate(keys, with_versions=self.supports_versions()))

    def upsert(self, rows: Sequence[EmbeddedChunk]) -> None:
        if not rows:
            return
        table = self.table(create=True)
        data = self._fit(table, rows_to_arrow(rows, self.dimensions))
        (
            table.merge_insert("id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(data)
        )

    def count(self) -> int:
        table = self.table()
        return 0 if table is None else int(table.count_rows())

    def ids(self) -> set[str]:
        return set(self._project(["id"]).column("id").to_pylist()) if self.exists() else set()

    def documents_present(self, document_ids: Sequence[int]) -> set[int]:
        """Which of these documents have at least one row here."""
        table = self.table()
        if table is None or not document_ids:
            return set()
        found: set[int] = set()
        for start in range(0, len(document_ids), 1000):
            ids = ", ".join(str(int(d)) for d in document_ids[start : start + 1000])
            where = f"document_id IN ({ids})"  # ints only: nothing to escape
            found.update(_select(table, where, ["document_id"]).column("document_id").to_pylist())
        return found

    def document_rows(
        self, document_id: int, columns: list[str], *, limit: int
    ) -> list[dict[str, Any]]:
        """One document's rows (at most ``limit``), in their order in the document."""
        table = self.table()
        if table is None:
            return []
        where = f"document_id = {int(document_id)}"  # an int: nothing to escape
        rows = _select(table, where, sorted({"ordinal", *columns}), limit=limit).to_pylist()
        return sorted(rows, key=lambda r: int(r["ordinal"]))

    def delete_documents(self, document_ids: Sequence[int]) -> None:
        table = self.table()
        if table is None or not document_ids:
            return
        ids = ", ".join(str(int(d)) for d in document_ids)  # ints only: nothing to escape
        table.delete(f"document_id IN ({ids})")

    def lookup(self, hashes: Sequence[str]) -> dict[str, Vector]:
        """Vectors already stored for these content hashes (hex only, checked): one for
        every distinct hash the table holds, however often some hash repeats (a cap on
        the rows read let a repeated hash crowd the others out, and their chunks were
        then taken as new and stored twice)."""
        table = self.table()
        wanted = sorted({h for h in hashes if _HEX.match(h)})
        if table is None or not wanted:
            return {}
        # First the (small) ids of every matching row, to pick one row per hash; then
        # the vectors of those rows only, so repeats never cost a vector read.
        matches = _select(table, f"content_hash IN ({_quoted(wanted)})", ["id", "content_hash"])
        first: dict[str, str] = {}
        for row_id, digest in zip(
            matches.column("id").to_pylist(),
            matches.column("content_hash").to_pylist(),
            strict=True,
        ):
            first.setdefault(digest, row_id)
        rows = self.fetch(list(first.values()), ["content_hash", "vector"])
        return {
            row["content_hash"]: np.asarray(row["vector"], dtype=np.float32)
            for row in rows.values()
        }

    def vector_search(
        self,
        vector: Vector | Sequence[float],
        k: int,
        *,
        where: str | None = None,
        exact: bool = False,
        nprobes: int = 20,
        refine_factor: int | None = 5,
        units: dict[str, str] | None = None,
        ef: int | None = None,
    ) -> list[tuple[str, float]]:
        """(id, cosine similarity) of the k nearest rows meeting ``where`` (a predicate
        built by search/ranking/filters.py). Uses the ANN index when there is one, unless
        ``exact``; rows written after the index was built are searched exactly by LanceDB
        and merged in. (nprobes and refine_factor are ignored by a table with no index;
        refine_factor None: the index's own, quantized distances, not re-ranked exactly;
        ef: the HNSW search's breadth, None: LanceDB's default.)
        ``units`` gets each row's passage, when the table records them."""
        table = self.table()
        if table is None or k <= 0:
            return []
        query = table.search(np.asarray(vector, dtype=np.float32)).distance_type("cosine")
        if where:
            query = query.where(where, prefilter=True)
        if exact:
            query = query.bypass_vector_index()
        else:
            query = query.nprobes(nprobes)
            if refine_factor is not None:
                query = query.refine_factor(refine_factor)
            if ef is not None:
                # The graph search keeps at least as many candidates as are fetched.
                query = query.ef(max(ef, k * (refine_factor or 1)))
        with_parents = units is not None and self._has_column("parent")
        columns = ["id", "_distance", *(["parent"] if with_parents else [])]
        rows = query.select(columns).limit(k).to_arrow()
        ids = rows.column("id").to_pylist()
        distances = rows.column("_distance").to_pylist()
        if with_parents and units is not None:
            parents = rows.column("parent").to_pylist()
            units.update((i, p) for i, p in zip(ids, parents, strict=True) if p)
        return [(i, 1.0 - float(d)) for i, d in zip(ids, distances, strict=True)]

    def count_where(self, where: str | None) -> int:
        table = self.table()
        return 0 if table is None else int(table.count_rows(where))

    def has_vector_index(self) -> bool:
        table = self.table()
        return table is not None and any(
            "vector" in index.columns for index in table.list_indices()
        )

    def ensure_vector_index(self, *, min_rows: int) -> str:
        """Build the IVF_HNSW_SQ index once the table has ``min_rows`` rows (its fragments
        compacted first); fold rows added since into it when they pass a tenth of the
        indexed ones. Returns what it did: "built", "updated", "current" or
        "below-threshold"."""
        from lancedb.index import BTree, IvfHnswSq

        table = self.table()
        rows = self.count()
        if table is None or rows < min_rows:
            return "below-threshold"
        all_indices = table.list_indices()
        indices = [i for i in all_indices if "vector" in i.columns]
        if not indices and self.fragment_count() > 1:
            # A build writes a fragment per batch: one file set to read a search's rows
            # from instead of hundreds (the hourly GC would compact it only later), and the
            # indexes are built once over the result.
            table.optimize()
            all_indices = table.list_indices()
        if not any("id" in i.columns for i in all_indices):
            # Fetching a page of results by id is a scan of the id column without it; with
            # it, a lookup.
            table.create_index("id", config=BTree(), replace=True)
        if not indices:
            table.create_index("vector", config=IvfHnswSq(distance_type="cosine"), replace=True)
            return "built"
        stats = table.index_stats(indices[0].name)
        if stats is not None and stats.num_unindexed_rows * 10 > max(stats.num_indexed_rows, 1):
            table.optimize()
            return "updated"
        return "current"

    def fetch(self, ids: Sequence[str], columns: list[str]) -> dict[str, dict[str, Any]]:
        """Rows by chunk id (ids are our own hex digests, checked)."""
        table = self.table()
        wanted = sorted({i for i in ids if _ID.match(i)})
        if table is None or not wanted:
            return {}
        data = _select(
            table, f"id IN ({_quoted(wanted)})", sorted({"id", *columns}), limit=len(wanted)
        )
        return {row["id"]: row for row in data.to_pylist()}

    def optimize(self, *, keep_versions_for: timedelta) -> None:
        """Compact small fragments and prune versions older than ``keep_versions_for``
        (readers still on a pruned version would fail, so never prune to zero)."""
        table = self.table()
        if table is not None:
            table.optimize(cleanup_older_than=keep_versions_for)

    def fragment_count(self) -> int:
        table = self.table()
        return 0 if table is None else int(table.stats()["fragment_stats"]["num_fragments"])

    def _project(self, columns: list[str]) -> pa.Table:
        """Only these columns of every row: a scan that leaves the vectors on disk when they
        are not asked for (to_arrow() reads them all: 150 MB at 100k x 384)."""
        return self.table().search().select(columns).limit(None).to_arrow()

    def rows(self, *, columns: list[str] | None = None) -> list[dict[str, Any]]:
        table = self.table()
        if table is None:
            return []
        data = self._project(columns) if columns else table.to_arrow()
        return list(data.to_pylist())

    def sample(self, n: int, *, columns: list[str]) -> list[dict[str, Any]]:
        """The first ``n`` rows, without reading the rest of the table."""
        table = self.table()
        return [] if table is None else list(table.head(n).select(columns).to_pylist())

    def drop(self) -> None:
        self._table = None
        self._columns = None
        with contextlib.suppress(ValueError):  # already gone
            self._db.drop_table(self.table_name)


def _select(table: Any, where: str, columns: list[str], *, limit: int | None = None) -> pa.Table:
    """The columns of every row meeting ``where`` (a LanceDB query without a vector stops
    at its limit: by default exactly as many rows as match)."""
    if limit is None:
        limit = table.count_rows(where)
    return table.search().where(where).select(columns).limit(max(1, limit)).to_arrow()


def _quoted(values: Sequence[str]) -> str:
    """A SQL list of values already checked against _HEX or _ID (nothing to escape)."""
    return ", ".join(f"'{v}'" for v in values)


def metadata_of(row: dict[str, Any]) -> dict[str, Any]:
    raw = row.get("metadata") or "{}"
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}
