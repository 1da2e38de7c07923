"""Runs the stages for one job: documents stream through in windows (parse and chunk a
window's worth, reuse vectors the cache already has, embed the rest in token-aware
batches, hand the rows to the buffered sink, then the next window), so memory depends on
the window, not on the job. One document's failure is recorded and the job goes on; a
failure of the embedder or the store ends the job (after flushing what was already
embedded)."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ingestion.pipeline.batching import make_batches
from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.parse import parse_document
from ingestion.pipeline.progress import DocumentOutcome, Progress
from ingestion.pipeline.sandbox import ParseSandbox
from ingestion.pipeline.sink import BufferedSink
from ragstudio.core import languages
from ragstudio.core.types import (
    Chunk,
    ChunkStore,
    DocumentError,
    EmbeddedChunk,
    Embedder,
    EmbeddingError,
    Matrix,
    Section,
    SourceDocument,
    StreamingEmbedder,
    VectorCache,
)

CACHE_LOOKUP_SIZE = 1000


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    store_batch_size: int = 5000
    embed_batch_size: int = 32
    max_batch_tokens: int | None = None  # None: the embedder's own limit
    max_document_bytes: int | None = None
    # Characters of text one document may yield (a small compressed file can expand to
    # gigabytes of text); None: no bound.
    max_document_chars: int | None = None
    sink_queue_batches: int = 8
    # Chunks parsed ahead of the model: whole documents are added to a window until it
    # holds at least this many (so a window is this plus at most one document).
    window_chunks: int = 2048
    # With an embedder that reads chunks as it needs them (StreamingEmbedder), windows are
    # this small: the model starts after the first few documents and the rest are parsed
    # in a thread while it runs (local-fast: the sessions busy 96 % of the run against 84 %
    # with batches of 32 and one window, 1,359 SciFact chunks on 2 cores).
    stream_window_chunks: int = 256
    # Seconds one document may take to parse, in a child process (None: in this process,
    # no budget; for tests and trusted input).
    parse_timeout: float | None = None
    parse_memory_mb: int | None = None  # the parsing process's address space, if bounded
    # Parse seconds of the whole job; once spent, documents get parse_after_budget each.
    job_parse_budget: float | None = None
    parse_after_budget: float = 2.0


@dataclass
class PipelineResult:
    documents: int = 0
    chunks: int = 0
    embedded: int = 0
    persisted: int = 0
    skipped: int = 0
    writes: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    indexed: dict[int, int] = field(default_factory=dict)  # document id -> chunk count
    cancelled: bool = False
    seconds: float = 0.0

    def merge(self, other: PipelineResult) -> PipelineResult:
        """Two runs of one job (a rebuild catching up on late documents) as one result."""
        return PipelineResult(
            documents=self.documents + other.documents,
            chunks=self.chunks + other.chunks,
            embedded=self.embedded + other.embedded,
            persisted=other.persisted,  # progress totals are cumulative already
            skipped=self.skipped + other.skipped,
            writes=self.writes + other.writes,
            failed={**self.failed, **other.failed},
            indexed={**self.indexed, **other.indexed},
            cancelled=other.cancelled,
            seconds=self.seconds + other.seconds,
        )


class _Ledger:
    """Which chunks of each document are still to be persisted (shared with the writer)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.lock = threading.Lock()
        self.remaining: dict[int, int] = {}
        self.counts: dict[int, int] = {}
        self.failed: dict[int, str] = {}
        self.persisted_docs: set[int] = set()
        self.indexed: dict[int, int] = {}
        self.versions: dict[int, int] = {}
        self.reused: dict[int, int] = {}
        self.languages: dict[int, str] = {}

    def expect(self, document_id: int, chunks: int, version: int = 1, language: str = "") -> None:
        with self.lock:
            self.remaining[document_id] = chunks
            self.counts[document_id] = chunks
            self.versions[document_id] = version
            self.languages[document_id] = language

    def note_reused(self, chunks: Sequence[Chunk]) -> None:
        with self.lock:
            for chunk in chunks:
                self.reused[chunk.document_id] = self.reused.get(chunk.document_id, 0) + 1

    def fail(self, document_id: int, message: str) -> None:
        with self.lock:
            if document_id in self.failed:
                return
            self.failed[document_id] = message
            self.remaining.pop(document_id, None)
            version = self.versions.get(document_id, 1)
        self.progress.document_done(
            DocumentOutcome(document_id, ok=False, error=message, version=version)
        )

    def is_failed(self, document_id: int) -> bool:
        with self.lock:
            return document_id in self.failed

    def persisted(self, rows: Sequence[EmbeddedChunk]) -> None:
        done: list[int] = []
        with self.lock:
            for row in rows:
                doc = row.chunk.document_id
                self.persisted_docs.add(doc)
                if doc not in self.remaining:
                    continue
                self.remaining[doc] -= 1
                if self.remaining[doc] == 0:
                    del self.remaining[doc]
                    self.indexed[doc] = self.counts[doc]
                    done.append(doc)
        self.progress.add(persisted=len(rows))
        for doc in done:
            self.progress.document_done(
                DocumentOutcome(
                    doc,
                    ok=True,
                    chunk_count=self.counts[doc],
                    version=self.versions.get(doc, 1),
                    reused=self.reused.get(doc, 0),
                    language=self.languages.get(doc, ""),
                )
            )


Parse = Callable[..., list[Section]]


def _chunk_document(
    doc: SourceDocument,
    chunker: Chunker,
    ledger: _Ledger,
    *,
    parse: Parse,
    max_bytes: int | None,
    max_chars: int | None = None,
) -> list[Chunk]:
    try:
        sections = parse(doc.read(), doc.filename, max_bytes=max_bytes)
        if max_chars is not None:
            chars = sum(len(s.text) + len(s.header or "") for s in sections)
            if chars > max_chars:
                raise DocumentError(
                    f"the document's text is {chars:,} characters, over the limit of "
                    f"{max_chars:,} (RAGSTUDIO_MAX_DOCUMENT_CHARS): split it into smaller files"
                )
        doc_chunks = chunker.chunk(doc.id, sections, title=doc.title, version=doc.version)
        if not doc_chunks:
            raise DocumentError("no text found in the document")
    except DocumentError as exc:
        ledger.fail(doc.id, str(exc))
        return []
    except OSError as exc:
        ledger.fail(doc.id, f"cannot read the stored file: {exc.strerror or exc}")
        return []
    except Exception as exc:  # a parser bug must not take the other documents down
        ledger.fail(doc.id, f"unexpected error while parsing: {type(exc).__name__}: {exc}")
        return []
    ledger.expect(doc.id, len(doc_chunks), doc.version, _language(sections))
    ledger.progress.add(total=len(doc_chunks))
    return doc_chunks


def _language(sections: Sequence[Section]) -> str:
    """The document's language, from the start of its text (the header rows of a table
    say little: its cells are read too)."""
    sample: list[str] = []
    size = 0
    for section in sections:
        sample.append(f"{section.header}\n{section.text}" if section.header else section.text)
        size += len(sample[-1])
        if size >= languages.DETECT_CHARS:
            break
    try:
        return languages.detect("\n".join(sample))
    except Exception:  # a detector failure costs the language, never the document
        return ""


def chunk_windows(
    documents: Sequence[SourceDocument],
    chunker: Chunker,
    ledger: _Ledger,
    *,
    parse: Parse,
    max_bytes: int | None,
    window_chunks: int,
    cancel: threading.Event,
    max_chars: int | None = None,
) -> Iterator[list[Chunk]]:
    """The documents' chunks, a window at a time: documents are read only when the
    previous window has been handed on."""
    window: list[Chunk] = []
    for doc in documents:
        if cancel.is_set():
            break
        window.extend(
            _chunk_document(
                doc, chunker, ledger, parse=parse, max_bytes=max_bytes, max_chars=max_chars
            )
        )
        if len(window) >= window_chunks:
            yield window
            window = []
    if not cancel.is_set():
        ledger.progress.counted()
    if window and not cancel.is_set():
        yield window


def run_pipeline(
    *,
    documents: Sequence[SourceDocument],
    embedder: Embedder,
    store: ChunkStore,
    chunker: Chunker,
    config: PipelineConfig | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    vector_cache: VectorCache | None = None,
    pause: Callable[[], None] | None = None,
) -> PipelineResult:
    """``pause`` is called between windows, on this thread (the worker may run another
    user's job there, with the model free but for the last group sent)."""
    config = config or PipelineConfig()
    progress = progress or Progress()
    cancel = cancel or threading.Event()
    started = time.monotonic()
    ledger = _Ledger(progress)
    result = PipelineResult(documents=len(documents))

    max_items = min(config.embed_batch_size, embedder.max_batch_items)
    max_tokens = config.max_batch_tokens or embedder.max_batch_tokens
    streaming = isinstance(embedder, StreamingEmbedder)
    if isinstance(embedder, StreamingEmbedder):  # again, for the type checker
        progress.embedding = embedder.throttle_stats

    def count_retry(_reason: str) -> None:
        progress.add(retries=1)

    # Rows the target's own cache did not have cannot be in the target: append them.
    known_new = vector_cache is not None and vector_cache is store
    sink = BufferedSink(
        store,
        batch_size=config.store_batch_size,
        max_pending=config.sink_queue_batches,
        on_flush=ledger.persisted,
    )
    sandbox = (
        ParseSandbox(
            config.parse_timeout,
            memory_mb=config.parse_memory_mb,
            job_budget=config.job_parse_budget,
            after_budget=config.parse_after_budget,
        )
        if config.parse_timeout
        else None
    )
    windows = chunk_windows(
        documents,
        chunker,
        ledger,
        parse=sandbox.parse if sandbox else parse_document,
        max_bytes=config.max_document_bytes,
        max_chars=config.max_document_chars,
        window_chunks=max(1, config.stream_window_chunks if streaming else config.window_chunks),
        cancel=cancel,
    )
    progress.counting()
    progress.start_rate_window()
    try:
        with sink:
            if isinstance(embedder, StreamingEmbedder):
                # A remote provider sizes its own requests and keeps several in flight,
                # across windows (a window boundary does not drain the requests), and
                # local-fast keeps its sessions fed the same way; the next window is
                # parsed and chunked meanwhile, in a thread of its own.
                pending: deque[Chunk] = deque()

                def windows_to_embed() -> Iterator[list[Chunk]]:
                    for window in windows:
                        result.chunks += len(window)
                        yield _reuse(window, vector_cache, sink, progress, result, cancel, ledger)

                def items() -> Iterator[tuple[str, int]]:
                    for part in prefetched:
                        pending.extend(part)
                        yield from ((c.text, c.token_count) for c in part)
                        if pause is not None:
                            # The model holds at most this window's last group now.
                            pause()

                prefetched = Prefetch(windows_to_embed(), cancel)
                stream = embedder.embed_stream(items(), on_retry=count_retry, cancel=cancel)
                outcomes: Iterator[tuple[list[Chunk], Matrix | EmbeddingError]] = (
                    ([pending.popleft() for _ in range(end - start)], outcome)
                    for start, end, outcome in stream
                )
                try:
                    _store_outcomes(outcomes, sink, progress, result, ledger, known_new)
                finally:
                    prefetched.close()
            else:
                for window in windows:
                    result.chunks += len(window)
                    to_embed = _reuse(window, vector_cache, sink, progress, result, cancel, ledger)
                    batches = _one_at_a_time(
                        to_embed, embedder, ledger, cancel, max_items, max_tokens, count_retry
                    )
                    _store_outcomes(batches, sink, progress, result, ledger, known_new)
                    if cancel.is_set():
                        break
                    if pause is not None:
                        pause()
    finally:
        if sandbox is not None:
            sandbox.close()
        result.writes = sink.writes
        result.cancelled = cancel.is_set()
        result.seconds = time.monotonic() - started
    # Rows already written for a document version that failed later are removed (that
    # version only: an earlier one may be serving).
    stale = [
        (doc, ledger.versions.get(doc, 1)) for doc in ledger.failed if doc in ledger.persisted_docs
    ]
    if stale:
        store.delete_versions(stale)
    result.persisted = progress.persisted
    result.failed = dict(ledger.failed)
    result.indexed = dict(ledger.indexed)
    return result


class Prefetch:
    """Runs a generator one item ahead in a thread (the next window is parsed and chunked
    while the current one is embedded); its exceptions reach the consumer."""

    _DONE = object()

    def __init__(self, source: Iterator[list[Chunk]], cancel: threading.Event) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._cancel = cancel
        self._thread = threading.Thread(
            target=self._run, args=(source,), name="prefetch-windows", daemon=True
        )
        self._thread.start()

    def _run(self, source: Iterator[list[Chunk]]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._DONE)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[list[Chunk]]:
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._cancel.is_set() and not self._thread.is_alive():
                    return
                continue
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the thread (after the current window) and wait for it."""
        self._stop.set()
        self._thread.join()


def _reuse(
    window: list[Chunk],
    vector_cache: VectorCache | None,
    sink: BufferedSink,
    progress: Progress,
    result: PipelineResult,
    cancel: threading.Event,
    ledger: _Ledger,
) -> list[Chunk]:
    """Hand the chunks whose vectors the cache has to the sink; return the others."""
    if vector_cache is None:
        return window
    to_embed: list[Chunk] = []
    for start in range(0, len(window), CACHE_LOOKUP_SIZE):
        if cancel.is_set():
            break
        part = window[start : start + CACHE_LOOKUP_SIZE]
        found = vector_cache.lookup([c.content_hash for c in part])
        reused = [EmbeddedChunk(c, found[c.content_hash]) for c in part if c.content_hash in found]
        to_embed.extend(c for c in part if c.content_hash not in found)
        if reused:
            ledger.note_reused([r.chunk for r in reused])
            progress.add(skipped=len(reused), queued=len(reused))
            sink.put(reused)
            result.skipped += len(reused)
    return to_embed


# Batches in a row whose retries ran out before the job gives up: one is a bad moment of
# the provider (its documents fail alone), several are an outage.
MAX_EXHAUSTED_IN_A_ROW = 3


def _store_outcomes(
    outcomes: Iterator[tuple[list[Chunk], Matrix | EmbeddingError]],
    sink: BufferedSink,
    progress: Progress,
    result: PipelineResult,
    ledger: _Ledger,
    known_new: bool,
) -> None:
    """Hand each batch's rows to the sink; a batch the provider rejected, or that ran out
    of retries, fails its documents alone (several running out in a row end the job)."""
    exhausted = 0
    # Cancellation is checked before each batch is sent (by the producers of
    # ``outcomes``): vectors already computed are kept and flushed.
    for batch, outcome in outcomes:
        if isinstance(outcome, EmbeddingError):
            if not (outcome.input_rejected or outcome.retries_exhausted):
                raise outcome
            exhausted = exhausted + 1 if outcome.retries_exhausted else 0
            if exhausted >= MAX_EXHAUSTED_IN_A_ROW:
                raise outcome
            progress.add(errors=len(batch))
            what = "rejected" if outcome.input_rejected else "could not embed"
            for doc in {c.document_id for c in batch}:
                ledger.fail(doc, f"the embedder {what} this document's text: {outcome}")
            continue
        exhausted = 0
        rows = [
            EmbeddedChunk(c, v, new=known_new)
            for c, v in zip(batch, outcome, strict=True)
            if not ledger.is_failed(c.document_id)
        ]
        progress.add(embedded=len(rows), queued=len(rows))
        result.embedded += len(rows)
        sink.put(rows)


def _one_at_a_time(
    chunks: list[Chunk],
    embedder: Embedder,
    ledger: _Ledger,
    cancel: threading.Event,
    max_items: int,
    max_tokens: int,
    on_retry: Callable[[str], None],
) -> Iterator[tuple[list[Chunk], Matrix | EmbeddingError]]:
    for batch in make_batches(chunks, max_items=max_items, max_tokens=max_tokens):
        if cancel.is_set():
            return
        batch = [c for c in batch if not ledger.is_failed(c.document_id)]
        if not batch:
            continue
        try:
            yield batch, embedder.embed_batch([c.text for c in batch], on_retry=on_retry)
        except EmbeddingError as exc:
            yield batch, exc
