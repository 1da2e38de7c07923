from __future__ import annotations

from django import template

from ragstudio.formatting import clock

register = template.Library()


@register.filter
def percent(value: float | int | None, total: float | int | None) -> str:
    """value as a percentage of total, for a CSS width ("0" when total is 0)."""
    if not total or value is None:
        return "0"
    return f"{max(0.0, min(100.0, 100.0 * float(value) / float(total))):.2f}"


@register.filter
def duration(seconds: float | int | None) -> str:
    return clock(seconds, unknown="\u2013")  # en dash
