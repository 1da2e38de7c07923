"""Parsing with a time budget: each document is parsed in a child process, and one that
takes longer than the budget fails alone ("took longer than N s to parse") while the job
goes on. The worker's own threads (the heartbeat among them) keep running meanwhile: the
parent only waits on a pipe, and a parser stuck in a regular expression or in C code holds
the child's GIL, not ours.

The child is a plain subprocess (`python -m ingestion.pipeline.sandbox`), not a
multiprocessing one: django-q2 runs tasks in daemonic processes, which multiprocessing does
not let have children. Messages are length-prefixed pickles over stdin and stdout; the
child only ever unpickles what its parent sent."""

from __future__ import annotations

import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from ingestion.pipeline.decrypt import decrypt_document
from ingestion.pipeline.parse import parse_document
from ragstudio.core.types import DocumentError, Section

_HEADER = struct.Struct(">Q")
# Documents of one job that ran out of parse time before the job's errors call it abusive.
ABUSIVE_TIMEOUTS = 3
_MEMORY_ENV = "RAGSTUDIO_SANDBOX_MEMORY_MB"
_ROOT = Path(__file__).resolve().parents[2]  # so the child imports this project


def _send(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    parts: list[bytes] = []
    while n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        piece = os.read(fd, min(n, 1 << 20))
        if not piece:
            raise EOFError("the parser process ended")
        parts.append(piece)
        n -= len(piece)
    return b"".join(parts)


def _receive(fd: int, deadline: float | None) -> Any:
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exactly(fd, size, deadline))


class ParseSandbox:
    def __init__(
        self,
        timeout: float,
        *,
        memory_mb: int | None = None,
        job_budget: float | None = None,
        after_budget: float = 2.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError("the parse time budget must be positive")
        self.timeout = timeout
        self.memory_mb = memory_mb
        # A job's parse time in all: once spent, each further document gets
        # ``after_budget`` seconds, so a job of many slow documents cannot hold the worker
        # for hours (each one failing alone at the full budget).
        self.job_budget = job_budget
        self.after_budget = min(after_budget, timeout)
        self.spent = 0.0
        self.timed_out = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def _child(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = {**os.environ, "PYTHONPATH": str(_ROOT)}
            if self.memory_mb:
                env[_MEMORY_ENV] = str(self.memory_mb)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "ingestion.pipeline.sandbox"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                cwd=_ROOT,
            )
            # Started and imported before any budget runs: start-up is no document's cost.
            self._call(("parse", b"ready", "warm-up.txt", None), deadline=None)
        return self._proc

    def _call(self, request: tuple[Any, ...], deadline: float | None) -> Any:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        _send(proc.stdin, request)
        return _receive(proc.stdout.fileno(), deadline)

    @property
    def budget_spent(self) -> bool:
        return self.job_budget is not None and self.spent >= self.job_budget

    def parse(self, data: bytes, filename: str, *, max_bytes: int | None) -> list[Section]:
        self._child()
        limit = self.after_budget if self.budget_spent else self.timeout
        started = time.monotonic()
        try:
            kind, value = self._call(("parse", data, filename, max_bytes), deadline=started + limit)
        except TimeoutError:
            self.close()  # it may be stuck for hours: a fresh child takes the next one
            self.timed_out += 1
            raise DocumentError(self._timeout_reason(limit)) from None
        except (EOFError, BrokenPipeError, OSError) as exc:
            raise self._stopped(exc) from None
        finally:
            self.spent += time.monotonic() - started
        return list(_answer(kind, value, "parsing"))

    def decrypt(self, data: bytes, password: str, *, max_bytes: int) -> bytes | None:
        """The file opened with its uploader's password (None: it is not encrypted), in
        the child with the per-document time budget; a DocumentError says why not."""
        self._child()
        try:
            kind, value = self._call(
                ("decrypt", data, password, max_bytes), deadline=time.monotonic() + self.timeout
            )
        except TimeoutError:
            self.close()
            raise DocumentError(f"took longer than {self.timeout:g} s to decrypt") from None
        except (EOFError, BrokenPipeError, OSError) as exc:
            raise self._stopped(exc) from None
        return _answer(kind, value, "decrypting")  # type: ignore[no-any-return]

    def _stopped(self, exc: BaseException) -> DocumentError:
        self.close()
        return DocumentError(f"the parser stopped on this document ({exc})")

    def _timeout_reason(self, limit: float) -> str:
        reason = f"took longer than {limit:g} s to parse (a pathological document?)"
        if limit < self.timeout:
            reason = (
                f"took longer than {limit:g} s to parse: this job's parse time "
                f"({self.job_budget:g} s) is spent, so its slow documents fail fast"
            )
        if self.timed_out >= ABUSIVE_TIMEOUTS:
            reason += (
                f"; {self.timed_out} documents of this job ran out of time (an abusive upload?)"
            )
        return reason

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> ParseSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _answer(kind: str, value: Any, doing: str) -> Any:
    """The child's reply's value, or its verdict raised."""
    if kind == "document-error":
        raise DocumentError(value)
    if kind == "error":
        raise DocumentError(f"unexpected error while {doing}: {value}")
    return value


def _serve() -> None:
    """The child: parse what arrives on stdin, answer on stdout, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    memory_mb = int(os.environ.get(_MEMORY_ENV) or 0)
    if memory_mb:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Libraries' warnings about fonts and odd markup are no verdict on the document.
    logging.disable(logging.WARNING)
    while True:
        try:
            op, data, argument, max_bytes = _receive(stdin.fileno(), None)
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = (
                ("ok", decrypt_document(data, argument, max_bytes=max_bytes))
                if op == "decrypt"
                else ("ok", parse_document(data, argument, max_bytes=max_bytes))
            )
        except DocumentError as exc:
            reply = ("document-error", str(exc))
        except MemoryError:
            reply = (
                "document-error",
                f"ran out of memory while parsing (the limit is {memory_mb:,} MB)",
            )
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        _send(stdout, reply)


if __name__ == "__main__":
    _serve()
