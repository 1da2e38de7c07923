"""Sign-ins, failed sign-ins, sign-outs and lockouts in the audit trail."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

from knowledge_bases.models import AuditEvent


def _logged_in(sender: Any, request: Any, user: Any, **_kwargs: Any) -> None:
    AuditEvent.record(AuditEvent.Action.LOGIN, actor=user, target=f"user {user.get_username()}")


def _logged_out(sender: Any, request: Any, user: Any, **_kwargs: Any) -> None:
    if user is not None:
        AuditEvent.record(
            AuditEvent.Action.LOGOUT, actor=user, target=f"user {user.get_username()}"
        )


def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    name = str(credentials.get("username") or "")[:150]
    AuditEvent.record(AuditEvent.Action.LOGIN_FAILED, actor_name=name, target=f"user {name}")


def _locked_out(sender: Any, request: Any, username: str | None = None, **kwargs: Any) -> None:
    name = str(username or "")[:150]
    AuditEvent.record(
        AuditEvent.Action.LOCKOUT,
        actor_name=name,
        target=f"user {name}",
        detail={"ip": kwargs.get("ip_address")},
    )


def connect() -> None:
    user_logged_in.connect(_logged_in, dispatch_uid="audit-login")
    user_logged_out.connect(_logged_out, dispatch_uid="audit-logout")
    user_login_failed.connect(_login_failed, dispatch_uid="audit-login-failed")
    user_locked_out.connect(_locked_out, dispatch_uid="audit-lockout")
