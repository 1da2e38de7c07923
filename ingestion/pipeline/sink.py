"""The buffered sink: rows wait in memory until ``batch_size`` of them can be written in
one call, and the writing happens on a thread of its own so the embedder never waits on
storage. The queue between them is bounded: a slow store slows the embedder down
(back-pressure) instead of letting memory grow without limit.

LanceDB makes every write a version with its own manifest, so small writes are slow and
leave manifests behind (docs/benchmarks.md): few large writes are the whole point.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

from ragstudio.core.types import ChunkStore, EmbeddedChunk, PipelineError

_END = object()


class BufferedSink:
    def __init__(
        self,
        store: ChunkStore,
        *,
        batch_size: int,
        max_pending: int = 8,
        on_flush: Callable[[Sequence[EmbeddedChunk]], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"store batch size must be positive, got {batch_size}")
        self.store = store
        self.batch_size = batch_size
        self.on_flush = on_flush
        self.writes = 0
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)
        self._started = False
        self._closed = False

    def __enter__(self) -> BufferedSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def put(self, rows: Sequence[EmbeddedChunk]) -> None:
        """Hand rows to the writer; blocks while the queue is full."""
        if self._closed:
            raise PipelineError("the sink is closed")
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(list(rows), timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Flush what is buffered (also on cancellation) and wait for the writer."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            while self._thread.is_alive():
                try:
                    self._queue.put(_END, timeout=0.2)
                    break
                except queue.Full:
                    continue
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise PipelineError(f"writing to the store failed: {self._error}") from self._error

    def _run(self) -> None:
        buffer: list[EmbeddedChunk] = []
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                assert isinstance(item, list)
                buffer.extend(item)
                while len(buffer) >= self.batch_size:
                    self._write(buffer[: self.batch_size])
                    buffer = buffer[self.batch_size :]
            if buffer:
                self._write(buffer)
        except BaseException as exc:  # reported to the producer by put()/close()
            self._error = exc
            # Keep draining so a producer blocked on a full queue wakes up and sees it.
            while True:
                try:
                    if self._queue.get(timeout=0.5) is _END:
                        return
                except queue.Empty:
                    if self._closed:
                        return

    def _write(self, rows: list[EmbeddedChunk]) -> None:
        self.store.write(rows)
        self.writes += 1
        if self.on_flush is not None:
            self.on_flush(rows)
