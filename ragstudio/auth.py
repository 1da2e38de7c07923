"""API authentication: `Authorization: Bearer <key>` (keys a user makes on the Keys page or
with the API, staff in the admin, the operator with `manage.py api_token`), or the
browser's session. A key acts as its user, narrowed by its scope and knowledge bases (the
selectors read ``user.api_key``)."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from knowledge_bases.models import ApiToken

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that only read: searches (their bodies are too rich for a query string).
_READ_POSTS = re.compile(
    r"^/(?:api/kbs/[^/]+/search|v1/vector_stores/[^/]+/search|dify/retrieval)/?$"
)


def key_user(token: str) -> Any | None:
    """The user a bearer key acts as (with ``api_key`` set on it), or None for a key that
    is unknown, revoked, expired or whose user is inactive."""
    if not token or len(token) > 200:
        return None
    now = timezone.now()
    row = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=ApiToken.hash(token), revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .first()
    )
    if row is None or not row.user.is_active:
        return None
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
    row.kb_ids = frozenset(row.knowledge_bases.values_list("pk", flat=True))
    user = row.user
    user.api_key = row  # type: ignore[attr-defined]
    return user


def bearer_token(request: HttpRequest) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header; None when the header is
    missing, of another scheme or empty."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def request_key_user(request: HttpRequest) -> Any | None:
    """The user of the request's bearer key (``key_user``), looked up once per request:
    the rate limits and then the API's authentication both ask."""
    if not hasattr(request, "_key_user"):
        token = bearer_token(request)
        request._key_user = key_user(token) if token else None  # type: ignore[attr-defined]
    return request._key_user  # type: ignore[attr-defined]


def key_may(user: Any, method: str, path: str) -> bool:
    """Whether the key ``user`` acts through may make this request: a read-only key reads
    and searches only."""
    key = getattr(user, "api_key", None)
    if key is None or not key.read_only:
        return True
    return method.upper() in SAFE_METHODS or bool(_READ_POSTS.match(path))


class ApiTokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = request_key_user(request) if token == bearer_token(request) else key_user(token)
        if user is None:
            return None
        if not key_may(user, request.method or "GET", request.path):
            raise HttpError(403, "this API key is read-only: it may search and read only")
        request.user = user
        return user


class BrowserSessionAuth(SessionAuth):
    """The browser's session. Its CSRF check applies only to a request that a session
    authenticates: one without a session (a script with a missing or wrong token) is 401
    with `WWW-Authenticate: Bearer`, not 403 "CSRF check failed"."""

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


api_auth = [ApiTokenAuth(), BrowserSessionAuth()]


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or behind RAGSTUDIO_TRUSTED_PROXY_COUNT proxies
    the address the outermost of them saw (X-Forwarded-For's entry that many from the
    right: entries further left are the client's to forge)."""
    remote = str(request.META.get("REMOTE_ADDR") or "")
    proxies = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0) or 0)
    if not proxies:
        return remote
    chain = [a.strip() for a in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    chain = [a for a in chain if a]
    if len(chain) < proxies:
        return remote
    return chain[-proxies][:100]
