"""The object store (a real S3 API: moto's server on loopback) and the tantivy indexes
shared through it: what one host commits, another finds, whole or not at all."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from ragstudio.core.types import Chunk, EmbeddedChunk, content_hash, parent_id
from ragstudio.testing.s3 import s3_options
from search.stores.bm25.replica import VERSION_FILE
from search.stores.generation import GenerationStore
from search.stores.objects import ObjectStore, storage_options_items


@pytest.fixture
def store(s3_server) -> ObjectStore:  # type: ignore[no-untyped-def]
    endpoint, bucket = s3_server
    return ObjectStore(
        f"s3://{bucket}/t-{uuid.uuid4().hex[:8]}", storage_options_items(s3_options(endpoint))
    )


def _rows(texts: list[str], document_id: int = 1) -> list[EmbeddedChunk]:
    rng = np.random.default_rng(document_id)
    rows = []
    whole = " ".join(texts)
    passage = parent_id(document_id, 0, content_hash(whole))
    for i, text in enumerate(texts):
        digest = content_hash(text)
        chunk = Chunk(
            id=f"{document_id:04d}{i:04d}" + digest[:24],
            document_id=document_id,
            ordinal=i,
            text=text,
            content_hash=digest,
            token_count=len(text.split()),
            parent_id=passage,
            parent_text=whole if i == 0 else "",
            parent_chunks=tuple(
                f"{document_id:04d}{j:04d}" + content_hash(t)[:24] for j, t in enumerate(texts)
            )
            if i == 0
            else (),
        )
        vector = rng.normal(size=8).astype(np.float32)
        rows.append(EmbeddedChunk(chunk, vector / np.linalg.norm(vector), new=True))
    return rows


def test_objects_are_written_read_listed_and_deleted(store) -> None:
    store.put_bytes("a/one.txt", b"first")
    store.put_bytes("a/two.txt", b"second!")
    store.put_bytes("b.txt", b"b")
    assert store.get_bytes("a/one.txt") == b"first"
    assert store.get_bytes("nope.txt") is None
    assert store.list() == {"a/one.txt": 5, "a/two.txt": 7, "b.txt": 1}
    assert store.list("a") == {"a/one.txt": 5, "a/two.txt": 7}
    store.delete_tree("a")
    assert store.list() == {"b.txt": 1}
    store.delete_tree("a")  # already gone: no error
    store.delete("b.txt")
    assert store.list() == {}


def _generation(tmp: Path, remote: ObjectStore) -> GenerationStore:
    return GenerationStore(
        lancedb_uri=f"{remote.uri}/lancedb",
        table_name="kb1_g1",
        bm25_path=tmp / "bm25",
        dimensions=8,
        storage_options=remote.options,
        bm25_remote=f"{remote.uri}/bm25",
    )


def test_what_one_host_commits_another_host_finds(store, tmp_path) -> None:
    writer = _generation(tmp_path / "host-a", store)
    published: list[int] = []
    assert writer.bm25.replica is not None
    writer.bm25.replica.on_publish = published.append
    writer.write(_rows(["Volcanic eruptions release magma.", "Ash clouds travel far."]))
    assert published == [1]
    reader = _generation(tmp_path / "host-d", store)
    assert not (tmp_path / "host-d" / "bm25" / "meta.json").exists()  # nothing local yet
    reader.bm25.sync(1)
    assert reader.bm25.count() == 2 and reader.vectors.count() == 2
    assert reader.bm25.search("magma", 5)[0] == writer.bm25.search("magma", 5)[0]
    passages = reader.bm25.passage_ranking("magma eruptions", 5)
    assert {p for _c, _s, p in passages} == {writer.bm25.parents([passages[0][0]])[passages[0][0]]}

    # A second write (by a writer on a third host that first catches up), then the reader
    # asks for that version: it sees both documents.
    other = _generation(tmp_path / "host-c", store)
    assert other.bm25.replica is not None
    other.bm25.replica.on_publish = published.append
    other.write(_rows(["Tides follow the moon."], document_id=2))
    assert published == [1, 2]
    assert other.bm25.count() == 3  # it synced version 1 before writing on top of it
    reader.bm25.sync(1)
    assert reader.bm25.count() == 2  # it holds version 1: nothing to do
    reader.bm25.sync(2)
    assert reader.bm25.count() == 3 and reader.bm25.search("moon", 5)
    state = json.loads(store.get_bytes(f"bm25/{VERSION_FILE}") or b"{}")
    assert state["version"] == 2 and set(state["indexes"]) == {"chunks", "passages"}

    # Deletes publish too; the generation's files go from the store with it.
    other.delete_documents([1])
    assert published[-1] == 3
    reader.bm25.sync(3)
    assert reader.bm25.count() == 1 and not reader.bm25.search("magma", 5)
    other.drop()
    assert store.list("bm25") == {}
    assert not (tmp_path / "host-c" / "bm25").exists()


def test_a_reader_never_sees_a_half_published_version(store, tmp_path) -> None:
    writer = _generation(tmp_path / "a", store)
    writer.write(_rows(["First document about glaciers."]))
    reader = _generation(tmp_path / "b", store)
    reader.bm25.sync(1)
    assert reader.bm25.count() == 1
    # A writer that died after uploading segments but before the version: readers keep
    # the published version (the new segments are not referred to by any version).
    assert writer.bm25.replica is not None
    writer.bm25.replica.publish = lambda: 0  # type: ignore[method-assign]
    writer.write(_rows(["Second document about deserts."], document_id=2))
    assert writer.bm25.count() == 2
    reader.bm25.sync()  # the newest version the store has
    assert reader.bm25.count() == 1 and not reader.bm25.search("deserts", 5)
    # A version whose files are gone (deleted by a newer version meanwhile) is not
    # applied half: the sync fails, and the reader keeps what it had.
    state = json.loads(store.get_bytes(f"bm25/{VERSION_FILE}") or b"{}")
    meta = json.loads(state["indexes"]["chunks"])
    meta["segments"].append({"segment_id": str(uuid.uuid4()), "max_doc": 1, "deletes": None})
    state["indexes"]["chunks"] = json.dumps(meta)
    state["version"] = 5
    store.put_bytes(f"bm25/{VERSION_FILE}", json.dumps(state).encode())
    from search.stores.objects import ObjectStoreError

    with pytest.raises(ObjectStoreError, match="kept disappearing"):
        reader.bm25.sync(5)
    assert reader.bm25.count() == 1 and reader.bm25.replica is not None
    assert reader.bm25.replica.local_version() == 1


@pytest.mark.slow
def test_superseded_segments_leave_the_store(store, tmp_path) -> None:
    writer = _generation(tmp_path / "a", store)
    assert writer.bm25.replica is not None
    ever: set[str] = set()
    put = writer.bm25.replica.remote.put_file

    def recording(key: str, local: Path) -> None:
        ever.add(key)
        put(key, local)

    writer.bm25.replica.remote = _Recording(writer.bm25.replica.remote, recording)
    for document_id in range(1, 13):  # a segment a write; tantivy merges them as they pile
        writer.write(_rows([f"Document number {document_id} about rivers."], document_id))
    writer.delete_documents([1, 2])  # .del files supersede each other too
    writer.delete_documents([3])
    state = json.loads(store.get_bytes(f"bm25/{VERSION_FILE}") or b"{}")
    referenced = {
        s["segment_id"].replace("-", "")
        for name in ("chunks", "passages")
        for s in json.loads(state["indexes"][name])["segments"]
    }
    stored = set(store.list("bm25")) - {f"bm25/{VERSION_FILE}"}
    segments = {key.rsplit("/", 1)[-1].split(".", 1)[0] for key in stored}
    assert referenced <= segments  # nothing the newest version needs is gone
    gone = {f"bm25/{key}" for key in ever} - stored
    assert gone, "superseded files stay in the store"
    reader = _generation(tmp_path / "b", store)
    reader.bm25.sync()
    assert reader.bm25.count() == 9


class _Recording:
    """An object store whose uploads are also reported (the rest passes through)."""

    def __init__(self, inner: ObjectStore, put_file) -> None:  # type: ignore[no-untyped-def]
        self._inner = inner
        self.put_file = put_file

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)
