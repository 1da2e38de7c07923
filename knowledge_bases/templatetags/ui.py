from __future__ import annotations

from django import template

from ragstudio.core.formatting import clock

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


@register.filter
def get_item(mapping: dict | None, key: object) -> object:
    """mapping[key], or None (templates cannot index a dict by a variable)."""
    return None if mapping is None else mapping.get(key)


@register.filter
def split(value: str) -> list[str]:
    """ "a b c" -> ["a", "b", "c"] (a list written in a template)."""
    return str(value).split()
