"""The one-line progress bar the CLI commands print."""

from __future__ import annotations

from ingestion.models import IngestionJob


def format_eta(eta: float | None) -> str:
    if eta is None:
        return "--:--"
    seconds = round(eta)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(job: IngestionJob) -> str:
    parts = [
        f"embedded {job.ready}/{job.total}",
        f"persisted {job.persisted}",
        f"buffer {job.buffered}",
        f"{job.rate:.0f} chunks/s",
        f"ETA {format_eta(job.eta_seconds)}",
    ]
    if job.skipped:
        parts.insert(3, f"reused {job.skipped}")
    if job.retries:
        parts.append(f"retries {job.retries}")
    if job.errors:
        parts.append(f"errors {job.errors}")
    return " | ".join(parts)
