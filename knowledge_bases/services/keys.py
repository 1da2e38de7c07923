"""API keys a user makes for themself: named, read-only or read-write, limited to some
knowledge bases or not, expiring or not; the secret is shown once. Staff see and revoke
everyone's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from knowledge_bases.models import ApiToken, AuditEvent
from knowledge_bases.selectors import knowledge_base_get
from ragstudio.core.errors import NotFound, ValidationError
from ragstudio.core.text import storable

MAX_KEYS_PER_USER = 100
MAX_EXPIRY_DAYS = 3650
MAX_KEY_KBS = 100


def api_keys_of(user: Any) -> QuerySet[ApiToken]:
    """The keys ``user`` may see: their own, and every key for staff."""
    keys = ApiToken.objects.select_related("user").prefetch_related("knowledge_bases")
    return keys if user.is_staff else keys.filter(user=user)


def api_key_create(
    *,
    user: Any,
    name: str,
    scope: str = ApiToken.Scope.READ,
    knowledge_bases: list[str] | None = None,
    expires_in_days: int | None = None,
) -> tuple[ApiToken, str]:
    """A new key of ``user`` and its secret (shown this once). ``knowledge_bases`` are refs
    the user sees; each must name one (a key cannot reach what its user cannot)."""
    name = (name or "").strip()
    if not name or len(name) > 100 or not storable(name):
        raise ValidationError("name must be 1 to 100 characters of text", {"field": "name"})
    if scope not in ApiToken.Scope.values:
        raise ValidationError("scope must be read or write", {"field": "scope"})
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
        raise ValidationError(
            f"expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}", {"field": "expires_in_days"}
        )
    refs = [r.strip() for r in knowledge_bases or [] if r.strip()]
    if not all(storable(r) for r in refs):
        raise ValidationError("knowledge base refs must be text", {"field": "knowledge_bases"})
    if len(refs) > MAX_KEY_KBS:
        raise ValidationError(
            f"at most {MAX_KEY_KBS} knowledge bases", {"field": "knowledge_bases"}
        )
    kbs = []
    for ref in refs:
        try:
            kbs.append(knowledge_base_get(slug=ref, user=user))
        except NotFound:
            raise ValidationError(
                f"knowledge base {ref!r} not found", {"field": "knowledge_bases"}
            ) from None
    acting = getattr(user, "api_key", None)
    if acting is not None and acting.kb_ids and not kbs:
        # A key made with a key limited to some knowledge bases reaches no more than it.
        kbs = list(acting.knowledge_bases.all())
    if ApiToken.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_KEYS_PER_USER:
        raise ValidationError(
            f"you have {MAX_KEYS_PER_USER} keys: revoke one first", {"field": "name"}
        )
    expires_at = (
        timezone.now() + timedelta(days=expires_in_days) if expires_in_days is not None else None
    )
    key, secret = ApiToken.issue(
        user=user, name=name, scope=scope, expires_at=expires_at, knowledge_bases=kbs
    )
    AuditEvent.record(
        AuditEvent.Action.KEY_CREATE,
        actor=user,
        target=f"key {key.key_prefix} {key.name}",
        detail={
            "scope": key.scope,
            "knowledge_bases": [kb.slug for kb in kbs],
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return key, secret


def api_key_revoke(*, user: Any, key_id: int) -> ApiToken:
    """Revoke one of ``user``'s keys (any key, for staff); revoking twice is harmless."""
    key = api_keys_of(user).filter(pk=key_id).first()
    if key is None:
        raise NotFound(f"key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        AuditEvent.record(
            AuditEvent.Action.KEY_REVOKE,
            actor=user,
            target=f"key {key.key_prefix} {key.name}",
            detail={"owner": key.user.get_username()},
        )
    return key
