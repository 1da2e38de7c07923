"""Helpers for management commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ragstudio.core.bounds import Bound


def bounded_int(bound: Bound) -> Callable[[str], int]:
    """An argparse type: an integer inside ``bound``, or a clear usage error."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number not in bound:
            raise argparse.ArgumentTypeError(
                f"must be between {bound.low} and {bound.high}, got {number}"
            )
        return number

    return parse
