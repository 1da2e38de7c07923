from __future__ import annotations

import numpy as np

from ragstudio.core.types import Chunk, EmbeddedChunk, content_hash
from search.stores.generation import GenerationStore


def _row(doc: int, ordinal: int, text: str, dims: int = 4) -> EmbeddedChunk:
    digest = content_hash(text)
    chunk = Chunk(
        id=f"{doc}-{ordinal}",
        document_id=doc,
        ordinal=ordinal,
        text=text,
        content_hash=digest,
        token_count=3,
        title=f"t{doc}",
        metadata={"k": doc},
    )
    return EmbeddedChunk(chunk, np.full(dims, doc + ordinal / 10, dtype=np.float32))


def _store(tmp_path) -> GenerationStore:  # type: ignore[no-untyped-def]
    return GenerationStore(
        lancedb_uri=str(tmp_path / "l"), table_name="t", bm25_path=tmp_path / "b", dimensions=4
    )


def test_upsert_replaces_rows_with_the_same_id(tmp_path) -> None:
    store = _store(tmp_path)
    store.write([_row(1, 0, "alpha one"), _row(1, 1, "beta two")])
    store.write([_row(1, 1, "beta two"), _row(2, 0, "gamma three")])
    assert store.vectors.count() == store.bm25.count() == 3
    assert store.vectors.ids() == store.bm25.ids() == {"1-0", "1-1", "2-0"}


def test_delete_documents_removes_them_from_both_engines(tmp_path) -> None:
    store = _store(tmp_path)
    store.write([_row(1, 0, "alpha"), _row(2, 0, "beta"), _row(3, 0, "gamma")])
    store.delete_documents([1, 3])
    assert store.vectors.ids() == store.bm25.ids() == {"2-0"}


def test_lookup_returns_stored_vectors_by_content_hash_and_ignores_non_hex(tmp_path) -> None:
    store = _store(tmp_path)
    store.write([_row(1, 0, "alpha"), _row(2, 0, "beta")])
    found = store.lookup([content_hash("alpha"), content_hash("nope"), "x' OR 1=1 --"])
    assert list(found) == [content_hash("alpha")]
    np.testing.assert_allclose(found[content_hash("alpha")], np.full(4, 1.0))


def test_a_missing_table_reads_as_empty(tmp_path) -> None:
    store = _store(tmp_path)
    assert store.vectors.count() == 0 and store.bm25.count() == 0
    assert store.lookup([content_hash("a")]) == {}
    store.delete_documents([1])  # nothing to delete, no error


def test_rows_known_to_be_new_are_appended_and_others_upserted(tmp_path) -> None:
    from dataclasses import replace

    store = _store(tmp_path)
    fresh = [replace(_row(1, i, f"text {i}"), new=True) for i in range(3)]
    store.write(fresh)
    table = store.vectors.table()
    assert table.version == 2 and store.vectors.count() == 3
    # The same ids again, not marked new (a resumed job): replaced, not duplicated.
    store.write([_row(1, i, f"text {i}") for i in range(3)])
    assert store.vectors.count() == store.bm25.count() == 3
    assert store.vectors.ids() == store.bm25.ids()


def test_tantivy_rows_by_id_match_lancedb_rows(tmp_path) -> None:
    store = _store(tmp_path)
    rows = [_row(1, 0, "alpha one"), _row(1, 1, "beta two"), _row(2, 3, "gamma three")]
    paged = EmbeddedChunk(
        Chunk("p-1", 9, 0, "on a page", content_hash("on a page"), 3, page=7, metadata={"a": [1]}),
        np.ones(4, dtype=np.float32),
    )
    store.write([*rows, paged])
    ids = ["2-3", "p-1", "1-0", "nope"]
    columns = ["document_id", "ordinal", "text", "title", "page", "metadata"]
    from_lance = store.vectors.fetch(ids, columns)
    from_tantivy = store.bm25.rows(ids)
    assert set(from_tantivy) == set(from_lance) == {"2-3", "p-1", "1-0"}
    for chunk_id, row in from_lance.items():
        assert {k: from_tantivy[chunk_id][k] for k in row} == row
