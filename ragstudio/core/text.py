"""Checks on text from outside before it is stored."""

from __future__ import annotations


def storable(text: str) -> bool:
    """Text every database stores as given: encodable as UTF-8 (no lone surrogates, which
    JSON can carry) and without NUL characters (PostgreSQL refuses them)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
