from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(value: float | int | None, total: float | int | None) -> str:
    """value as a percentage of total, for a CSS width ("0" when total is 0)."""
    if not total or value is None:
        return "0"
    return f"{max(0.0, min(100.0, 100.0 * float(value) / float(total))):.2f}"


@register.filter
def duration(seconds: float | int | None) -> str:
    if seconds is None:
        return "\u2013"  # en dash
    seconds = round(float(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
