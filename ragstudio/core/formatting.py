"""Text for people, shared by the pages and the CLI."""

from __future__ import annotations


def clock(seconds: float | int | None, *, unknown: str = "--:--") -> str:
    """A duration as m:ss, or h:mm:ss from an hour up; ``unknown`` for None."""
    if seconds is None:
        return unknown
    total = round(float(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
