"""The audit trail page (staff): who did what, when, from where, filtered and paged."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from knowledge_bases.models import AuditEvent
from knowledge_bases.services import audit_events_filtered

PAGE_SIZE = 50
FAMILIES = ["documents", "document", "generation", "kb", "key", "source", "auth"]


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@staff_member_required
def audit_log(request: HttpRequest) -> HttpResponse:
    params = request.GET
    action = params.get("action", "")
    valid = set(AuditEvent.Action.values) | set(FAMILIES)
    errors = []
    if action and action not in valid:
        errors.append(f"unknown action {action!r}")
        action = ""
    since, until = _day(params.get("since", "")), _day(params.get("until", ""))
    for name in ("since", "until"):
        if params.get(name) and _day(params[name]) is None:
            errors.append(f"{name} must be a date (YYYY-MM-DD)")
    zone = timezone.get_current_timezone()
    events = audit_events_filtered(
        action=action,
        actor=params.get("actor", "").strip()[:150],
        kb=params.get("kb", "").strip()[:100],
        since=datetime.combine(since, time.min, zone) if since else None,
        until=datetime.combine(until + timedelta(days=1), time.min, zone) if until else None,
    ).select_related("actor")
    page = Paginator(events, PAGE_SIZE).get_page(params.get("page"))
    query = params.copy()
    query.pop("page", None)
    return render(
        request,
        "knowledge_bases/audit.html",
        {
            "page": page,
            "actions": AuditEvent.Action.choices,
            "families": FAMILIES,
            "filters": {
                "action": action,
                "actor": params.get("actor", ""),
                "kb": params.get("kb", ""),
                "since": params.get("since", ""),
                "until": params.get("until", ""),
            },
            "query": query.urlencode(),
            "errors": errors,
            "retention_days": settings.AUDIT_RETENTION_DAYS,
        },
    )
