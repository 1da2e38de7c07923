"""Schemas every API router shares."""

from __future__ import annotations

from ninja import Schema


class ErrorOut(Schema):
    message: str
    extra: dict
