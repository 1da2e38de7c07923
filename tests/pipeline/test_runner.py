"""The whole pipeline on real stores (LanceDB + tantivy in tmp_path) and the real model."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.progress import Progress
from ingestion.pipeline.runner import PipelineConfig, run_pipeline
from ragstudio.core.types import EmbeddingError, Matrix, PipelineError, SourceDocument
from search.stores.generation import GenerationStore

TEXTS = [
    " ".join(
        f"Document {d} sentence {i} mentions subject {d * 7 + i} and other facts."
        for i in range(40)
    )
    for d in range(6)
]


def _docs(texts: list[str], start: int = 1) -> list[SourceDocument]:
    return [
        SourceDocument(id=start + i, filename=f"doc{start + i}.txt", read=lambda t=t: t.encode())
        for i, t in enumerate(texts)
    ]


def _store(tmp_path: Path) -> GenerationStore:
    return GenerationStore(
        lancedb_uri=str(tmp_path / "lancedb"),
        table_name="kb1_g1",
        bm25_path=tmp_path / "bm25",
        dimensions=384,
    )


def _run(embedder, store, docs, **kwargs):  # type: ignore[no-untyped-def]
    config = PipelineConfig(store_batch_size=kwargs.pop("store_batch_size", 50))
    return run_pipeline(
        documents=docs,
        embedder=embedder,
        store=store,
        chunker=Chunker(embedder.tokenizer, size=64, overlap=8),
        config=config,
        vector_cache=store,
        **kwargs,
    )


def test_documents_end_up_in_both_stores_with_the_same_ids(tmp_path, embedder) -> None:
    store = _store(tmp_path)
    progress = Progress()
    result = _run(embedder, store, _docs(TEXTS), progress=progress)
    assert result.chunks > 20 and not result.failed
    assert result.embedded == result.persisted == result.chunks
    assert store.vectors.count() == store.bm25.count() == result.chunks
    assert store.vectors.ids() == store.bm25.ids()
    assert sum(result.indexed.values()) == result.chunks and set(result.indexed) == set(range(1, 7))
    snap = progress.snapshot()
    assert (snap.total, snap.embedded, snap.persisted, snap.buffered) == (
        result.chunks,
        result.chunks,
        result.chunks,
        0,
    )


def test_lancedb_gets_exactly_ceil_n_over_batch_size_writes(tmp_path, embedder) -> None:
    store = _store(tmp_path)
    result = _run(embedder, store, _docs(TEXTS), store_batch_size=25)
    table = store.vectors.table()
    # One version for the empty table, then one per write.
    assert len(table.list_versions()) == 1 + math.ceil(result.chunks / 25) == 1 + result.writes


def test_running_the_same_job_twice_leaves_the_same_rows(tmp_path, embedder) -> None:
    store = _store(tmp_path)
    first = _run(embedder, store, _docs(TEXTS))
    before = sorted(
        store.vectors.rows(columns=["id", "text", "document_id"]), key=lambda r: r["id"]
    )
    second = _run(embedder, store, _docs(TEXTS))
    after = sorted(store.vectors.rows(columns=["id", "text", "document_id"]), key=lambda r: r["id"])
    assert before == after
    assert store.bm25.count() == len(after) == first.chunks
    # Nothing was recomputed: every vector came back from the store by content hash.
    assert (second.embedded, second.skipped) == (0, first.chunks)


def test_a_bad_document_fails_alone_and_the_job_goes_on(tmp_path, embedder) -> None:
    store = _store(tmp_path)
    docs = [
        *_docs(TEXTS[:2]),
        SourceDocument(id=50, filename="image.png", read=lambda: b"\x89PNG\r\n\x1a\nxxxx"),
        SourceDocument(id=51, filename="empty.txt", read=lambda: b""),
        SourceDocument(id=52, filename="gone.txt", read=Path("/nonexistent/file").read_bytes),
    ]
    result = _run(embedder, store, docs)
    assert set(result.failed) == {50, 51, 52}
    assert "damaged PNG image" in result.failed[50] and "empty" in result.failed[51]
    assert "cannot read the stored file" in result.failed[52]
    assert set(result.indexed) == {1, 2}
    assert {r["document_id"] for r in store.vectors.rows(columns=["document_id"])} == {1, 2}


class RejectingEmbedder:
    """Wraps the real model; the provider rejects texts containing a marker word."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        for name in ("spec", "fingerprint", "dimensions", "max_input_tokens", "tokenizer"):
            setattr(self, name, getattr(inner, name))
        self.max_batch_items = 4
        self.max_batch_tokens = inner.max_batch_tokens

    def embed_batch(self, texts: Sequence[str], *, on_retry=None) -> Matrix:  # type: ignore[no-untyped-def]
        if any("POISON" in t for t in texts):
            raise EmbeddingError("HTTP 400: input rejected", input_rejected=True)
        return self.inner.embed_batch(texts)


def test_a_document_the_provider_rejects_is_failed_and_its_rows_removed(tmp_path, embedder) -> None:
    store = _store(tmp_path)
    poisoned = TEXTS[0] + " " + " ".join(["POISON sentence here."] * 3)
    result = _run(
        RejectingEmbedder(embedder), store, _docs([poisoned, TEXTS[1]]), store_batch_size=4
    )
    assert set(result.failed) == {1} and "rejected" in result.failed[1]
    assert set(result.indexed) == {2}
    assert {r["document_id"] for r in store.vectors.rows(columns=["document_id"])} == {2}
    assert store.bm25.ids() == store.vectors.ids()


def test_cancellation_stops_embedding_and_flushes_what_was_embedded(tmp_path, embedder) -> None:
    store = _store(tmp_path)
    cancel = threading.Event()

    class CancelAfterTwo(RejectingEmbedder):
        calls = 0

        def embed_batch(self, texts, *, on_retry=None):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == 2:
                cancel.set()
            return self.inner.embed_batch(texts)

    result = _run(
        CancelAfterTwo(embedder), store, _docs(TEXTS), cancel=cancel, store_batch_size=1000
    )
    assert result.cancelled
    assert result.embedded == 8  # two batches of 4, then it stopped
    assert store.vectors.count() == result.persisted == 8  # the partial buffer was flushed


def test_a_store_failure_fails_the_job(tmp_path, embedder) -> None:
    class BrokenStore:
        def write(self, rows) -> None:  # type: ignore[no-untyped-def]
            raise OSError("No space left on device")

        def delete_versions(self, keys) -> None:  # type: ignore[no-untyped-def]
            pass

        def lookup(self, hashes):  # type: ignore[no-untyped-def]
            return {}

    with pytest.raises(PipelineError, match="writing to the store failed: No space left on device"):
        _run(embedder, BrokenStore(), _docs(TEXTS[:2]), store_batch_size=2)


def test_vectors_persisted_equal_what_the_model_computes(tmp_path, embedder) -> None:
    store = _store(tmp_path)
    _run(embedder, store, _docs(TEXTS[:1]))
    rows = store.vectors.rows(columns=["text", "vector"])
    direct = embedder.embed_batch([r["text"] for r in rows])
    stored = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    cosine = (direct * stored).sum(1)
    assert cosine.min() > 0.999


def test_documents_stream_through_in_windows(tmp_path, embedder) -> None:
    """Issue 10, case 6: every document was parsed and chunked before the first embedding,
    so a job held all of its text and chunks at once. With a window, embedding starts
    after the first window's documents, and no more than a window waits for the model."""
    events: list[str] = []

    class Recording:
        def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
            self.inner = inner

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.inner, name)

        def embed_batch(self, texts, on_retry=None):  # type: ignore[no-untyped-def]
            events.append(f"embed {len(texts)}")
            return self.inner.embed_batch(texts, on_retry=on_retry)

    def reader(i: int, text: str):  # type: ignore[no-untyped-def]
        def read() -> bytes:
            events.append(f"read {i}")
            return text.encode()

        return read

    docs = [
        SourceDocument(id=i + 1, filename=f"d{i}.txt", read=reader(i, t))
        for i, t in enumerate(TEXTS)
    ]
    store = _store(tmp_path)
    result = run_pipeline(
        documents=docs,
        embedder=Recording(embedder),
        store=store,
        chunker=Chunker(embedder.tokenizer, size=64, overlap=8),
        config=PipelineConfig(store_batch_size=50, window_chunks=20),
        vector_cache=store,
    )
    assert result.failed == {} and store.vectors.count() == result.chunks > 40
    first_embed = next(i for i, e in enumerate(events) if e.startswith("embed"))
    assert events.index("read 5") > first_embed  # the last document is read later
    # Between two reads, at most one window is embedded: documents are added to it until
    # it holds 20 chunks, so it is under 20 plus the largest document.
    largest = max(result.indexed.values())
    pending = 0
    for event in events:
        if event.startswith("read"):
            pending = 0
        else:
            pending += int(event.split()[1])
            assert pending < 20 + largest, events


def test_a_document_over_the_parse_budget_fails_alone(tmp_path, embedder) -> None:
    """Issue 11, case 2: one document stalled the worker for hours. Parsed in a child
    process with a budget, it fails with a clear reason and the others are indexed."""
    hostile = (" _a" * 3_000_000).encode()  # ~8 s to parse with the linear rules, 9 MB
    docs = [
        *_docs(TEXTS[:1]),
        SourceDocument(id=50, filename="slow.md", read=lambda: hostile),
        *_docs(TEXTS[1:2], start=60),
    ]
    store = _store(tmp_path)
    result = run_pipeline(
        documents=docs,
        embedder=embedder,
        store=store,
        chunker=Chunker(embedder.tokenizer, size=64, overlap=8),
        config=PipelineConfig(store_batch_size=50, parse_timeout=2.0),
        vector_cache=store,
    )
    assert result.failed == {50: "took longer than 2 s to parse (a pathological document?)"}
    assert set(result.indexed) == {1, 60}
    assert {r["document_id"] for r in store.vectors.rows(columns=["document_id"])} == {1, 60}


def test_a_document_whose_text_passes_the_bound_fails_alone(tmp_path, embedder) -> None:
    """Issue 25: a document's extracted text is bounded (RAGSTUDIO_MAX_DOCUMENT_CHARS), so
    a small file that expands to gigabytes of text fails with the reason, alone."""
    long_text = ("Sentence about a long report. " * 200).encode()  # 5,999 once stripped
    docs = [*_docs(TEXTS[:1]), SourceDocument(id=50, filename="long.txt", read=lambda: long_text)]
    store = _store(tmp_path)
    result = run_pipeline(
        documents=docs,
        embedder=embedder,
        store=store,
        chunker=Chunker(embedder.tokenizer, size=64, overlap=8),
        config=PipelineConfig(store_batch_size=50, max_document_chars=5_000),
        vector_cache=store,
    )
    assert set(result.failed) == {50}
    assert "5,999 characters, over the limit of 5,000" in result.failed[50]
    assert "RAGSTUDIO_MAX_DOCUMENT_CHARS" in result.failed[50]
    assert set(result.indexed) == {1}
    # Under the bound, the same document is indexed.
    again = run_pipeline(
        documents=docs[1:],
        embedder=embedder,
        store=store,
        chunker=Chunker(embedder.tokenizer, size=64, overlap=8),
        config=PipelineConfig(store_batch_size=50, max_document_chars=6_000),
        vector_cache=store,
    )
    assert set(again.indexed) == {50} and not again.failed


def test_once_a_jobs_parse_time_is_spent_its_slow_documents_fail_fast(tmp_path, embedder) -> None:
    """Issue 25, case 1: each slow document used the whole per-document budget, so 1,000 of
    them held the worker for hours. Past the job's budget each gets a short one; after a few
    time-outs the reason calls the upload abusive. Quick documents still go through."""
    hostile = (" _a" * 3_000_000).encode()  # many seconds to parse, far over 1 s
    slow = [
        SourceDocument(id=50 + i, filename=f"slow{i}.md", read=lambda: hostile) for i in range(4)
    ]
    docs = [*slow, *_docs(TEXTS[:1], start=90)]
    store = _store(tmp_path)
    result = run_pipeline(
        documents=docs,
        embedder=embedder,
        store=store,
        chunker=Chunker(embedder.tokenizer, size=64, overlap=8),
        config=PipelineConfig(
            store_batch_size=50,
            parse_timeout=1.0,
            job_parse_budget=0.5,
            parse_after_budget=0.05,
        ),
        vector_cache=store,
    )
    assert set(result.indexed) == {90}
    assert result.failed[50] == "took longer than 1 s to parse (a pathological document?)"
    assert (
        "took longer than 0.05 s to parse: this job's parse time (0.5 s) is spent"
        in (result.failed[51])
    )
    assert "abusive" not in result.failed[51]
    assert "3 documents of this job ran out of time (an abusive upload?)" in result.failed[52]
    assert "4 documents of this job ran out of time" in result.failed[53]


@pytest.mark.parametrize("which", ["embedder", "fast_embedder"])
def test_the_pause_hook_runs_between_windows_on_the_pipeline_s_thread(
    tmp_path, request, which: str
) -> None:
    """Where a worker lets another user's job run: after each window, on the thread that
    called the pipeline, with that window's chunks handed to the model already."""
    embedder = request.getfixturevalue(which)
    store = _store(tmp_path)
    progress = Progress()
    seen: list[tuple[int, bool]] = []

    def pause() -> None:
        seen.append((progress.total, threading.current_thread() is threading.main_thread()))

    config = PipelineConfig(store_batch_size=50, window_chunks=20, stream_window_chunks=20)
    result = run_pipeline(
        documents=_docs(TEXTS),
        embedder=embedder,
        store=store,
        chunker=Chunker(embedder.tokenizer, size=64, overlap=8),
        config=config,
        progress=progress,
        pause=pause,
    )
    assert not result.failed and result.persisted == result.chunks >= 40
    # Windows of at least 20 chunks each: a pause after each, the first before the end.
    assert 2 <= len(seen) <= result.chunks // 20
    assert all(on_main for _total, on_main in seen)
    counted = [total for total, _ in seen]
    assert counted == sorted(counted) and counted[0] < result.chunks
