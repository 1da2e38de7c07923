"""Running a job in the foreground of a management command, with the progress line."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Any

from ingestion.jobs import job_claim, job_execute
from ingestion.models import IngestionJob
from ingestion.services import ingestion_job_cancel
from ragstudio.core.errors import RagStudioError
from ragstudio.core.formatting import clock


def progress_line(job: IngestionJob) -> str:
    total = f"{job.total}+ (counting)" if job.counting else str(job.total)
    parts = [
        f"embedded {job.ready}/{total}",
        f"persisted {job.persisted}",
        f"buffer {job.buffered}",
        f"{job.rate:.0f} chunks/s",
        f"ETA {clock(job.eta_seconds)}",
    ]
    if job.skipped:
        parts.insert(3, f"reused {job.skipped}")
    if job.retries:
        parts.append(f"retries {job.retries}")
    if job.embedding:
        parts.append(throttle_line(job.embedding))
    if job.errors:
        parts.append(f"errors {job.errors}")
    if job.attempts > 1:
        parts.append(f"attempt {job.attempts}")
    return " | ".join(parts)


def throttle_line(embedding: dict[str, Any]) -> str:
    """A remote embedder's throttle in words: "3 in flight x 64 texts, 1180 req/min,
    95k tokens/min, 2 throttle events (throttled to 2 in flight after 429)"."""
    line = (
        f"{embedding['concurrency']} in flight x {embedding['batch_items']} texts, "
        f"{embedding['requests_per_min']:.0f} req/min, "
        f"{embedding['tokens_per_min'] / 1000:.0f}k tokens/min"
    )
    if embedding.get("throttle_events"):
        line += f", {embedding['throttle_events']} throttle events ({embedding['note']})"
    return line


class ProgressPrinter:
    def __init__(self, stream: Any, *, interactive: bool, min_interval: float = 1.0) -> None:
        self.stream = stream
        self.interactive = interactive
        self.min_interval = min_interval
        self._last = 0.0
        self._width = 0

    def __call__(self, job: IngestionJob, *_: Any) -> None:
        now = time.monotonic()
        if not self.interactive and now - self._last < self.min_interval:
            return
        self._last = now
        line = progress_line(job)
        if self.interactive:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.interactive and self._width:
            self.stream.write("\n")
            self.stream.flush()


def run_in_foreground(job: IngestionJob, *, stdout: Any, stderr: Any) -> IngestionJob:
    """Run a queued job in this process with a live progress line; when another process
    holds its generation (or took the job), follow it instead. Ctrl-C cancels after a
    flush; a second Ctrl-C aborts."""
    printer = ProgressPrinter(stdout, interactive=sys.stdout.isatty())
    cancel = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def interrupt(_signum: int, _frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        stderr.write("\ncancelling: flushing what is embedded (Ctrl-C again to abort)")
        cancel.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)
    try:
        while True:
            claimed = job_claim(job_id=job.pk)
            if claimed is not None:
                job = job_execute(claimed, on_progress=printer, cancel=cancel)
                break
            job.refresh_from_db()
            if job.is_finished:
                break
            # Another process holds this generation (or took this job): follow it.
            printer(job)
            if cancel.is_set():
                with contextlib.suppress(RagStudioError):
                    ingestion_job_cancel(job=job)
                time.sleep(1.0)
            else:
                cancel.wait(1.0)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
        printer.end()
    job.refresh_from_db()
    return job
