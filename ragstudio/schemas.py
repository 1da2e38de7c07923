"""Schemas every API router shares."""

from __future__ import annotations

from typing import Annotated, Any

from ninja import Schema
from pydantic import BeforeValidator, Field

from ragstudio.core.bounds import Bound


def _json_integer(value: Any) -> Any:
    # JSON Schema's "integer" is any number without a fraction (642.0 is one), never a
    # boolean or a string; pydantic's lax int takes true and "642" too.
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


# An integer in a JSON body, as the OpenAPI schema describes it.
JsonInt = Annotated[int, BeforeValidator(_json_integer)]


# For an optional bounded integer: `Annotated[int, within(BOUND), JSON_INTEGER] | None`.
# Bounds given to `Field()` beside an optional JsonInt reach the OpenAPI schema as `ge`/`le`,
# which no client reads; inside the type they become `minimum`/`maximum`.
JSON_INTEGER = BeforeValidator(_json_integer)


def within(bound: Bound) -> Any:
    """The pydantic bounds of `bound`, as metadata of an Annotated integer."""
    return Field(ge=bound.low, le=bound.high)


def json_number(value: Any) -> Any:
    """A number in a JSON body (an integer is one too), never a boolean or a string: the
    BeforeValidator of such fields, placed after their bounds."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value


class ErrorOut(Schema):
    message: str
    extra: dict


# The error answers every operation documents: a body Django cannot parse or a request it
# refuses (400), no or a bad token (401), read-only access (403), not found or not yours
# (404), a state that forbids it (409), a body over the limit (413), invalid input (422).
ERRORS: dict[int, type[ErrorOut]] = {
    status: ErrorOut for status in (400, 401, 403, 404, 409, 413, 422, 429)
}
