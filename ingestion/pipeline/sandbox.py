"""Parsing with a time budget: each document is parsed in a child process, and one that
takes longer than the budget fails alone ("took longer than N s to parse") while the job
goes on. The worker's own threads (the heartbeat among them) keep running meanwhile: the
parent only waits, and a parser stuck in C code or a regular expression holds the GIL of
the child, not ours."""

from __future__ import annotations

import multiprocessing
from multiprocessing.pool import Pool
from typing import Any

from ingestion.pipeline.parse import parse_document
from ingestion.pipeline.types import DocumentError, Section


def _parse(data: bytes, filename: str, max_bytes: int | None) -> list[Section]:
    return parse_document(data, filename, max_bytes=max_bytes)


class ParseSandbox:
    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("the parse time budget must be positive")
        self.timeout = timeout
        self._pool: Pool | None = None

    def _ensure_pool(self) -> Pool:
        if self._pool is None:
            # forkserver: the worker has threads (heartbeat, writer, the model's), and a
            # fork of a threaded process can inherit a lock held by one of them.
            context: Any = multiprocessing.get_context("forkserver")
            self._pool = context.Pool(processes=1)
            # Started before any budget runs, so the start-up is not charged to a document.
            self._pool.apply(_parse, (b"ready", "warm-up.txt", None))
        return self._pool

    def parse(self, data: bytes, filename: str, *, max_bytes: int | None) -> list[Section]:
        pool = self._ensure_pool()
        pending = pool.apply_async(_parse, (data, filename, max_bytes))
        try:
            return pending.get(timeout=self.timeout)
        except multiprocessing.TimeoutError:
            self._kill()  # the child may be stuck for hours: a fresh one takes the next
            raise DocumentError(
                f"took longer than {self.timeout:g} s to parse (a pathological document?)"
            ) from None

    def _kill(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def close(self) -> None:
        self._kill()

    def __enter__(self) -> ParseSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
