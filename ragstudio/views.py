from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.http import Http404

from ragstudio.errors import NotFound

T = TypeVar("T")


def get_or_404(selector: Callable[..., T], **kwargs: Any) -> T:
    """Call a selector; its NotFound (someone else's object, or none) becomes a 404 page."""
    try:
        return selector(**kwargs)
    except NotFound as exc:
        raise Http404(exc.message) from None
