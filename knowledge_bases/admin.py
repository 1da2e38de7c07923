from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from ingestion.services import document_delete
from knowledge_bases.generations import generation_size_on_disk, promote_verdict, rollback_verdict
from knowledge_bases.models import (
    ApiToken,
    AuditEvent,
    Document,
    Generation,
    GenerationEvent,
    KnowledgeBase,
    Transfer,
)
from knowledge_bases.services import (
    generation_promote,
    generation_rollback,
    generations_gc,
    knowledge_base_delete,
)
from ragstudio.core.errors import RagStudioError


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "owner",
        "embedder",
        "chunk_size",
        "active_generation",
        "created_at",
    ]
    search_fields = ["name", "slug"]
    filter_horizontal = ["shared_with"]
    readonly_fields = ["active_generation", "embedding_dimensions", "created_at", "updated_at"]
    prepopulated_fields = {"slug": ["name"]}

    # Deletes go through the service: files after the commit, refused while a job runs.
    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # The active-generation pointer PROTECTs its generation; the service clears it first.
        deleted, counts, perms_needed, _protected = super().get_deleted_objects(objs, request)
        return deleted, counts, perms_needed, []

    def delete_model(self, request: HttpRequest, obj: KnowledgeBase) -> None:
        _service_delete(request, lambda: knowledge_base_delete(kb=obj))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[KnowledgeBase]) -> None:
        for kb in queryset:
            self.delete_model(request, kb)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "knowledge_base",
        "original_filename",
        "status",
        "chunk_count",
        "size",
        "created_at",
    ]
    list_filter = ["status", "knowledge_base"]
    search_fields = ["title", "original_filename", "sha256"]
    readonly_fields = [f.name for f in Document._meta.fields]

    # Deletes go through the service: chunks out of the serving generation, file off disk.
    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        kb = obj.knowledge_base
        _service_delete(request, lambda: document_delete(kb=kb, document_id=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        for document in queryset.select_related("knowledge_base"):
            self.delete_model(request, document)


def _service_delete(request: HttpRequest, delete: Callable[[], object]) -> None:
    """Run a delete service; its refusal becomes an error message (Django's own success
    message may still follow: the error says what was kept)."""
    try:
        delete()
    except RagStudioError as exc:
        messages.error(request, f"Not deleted: {exc.message}")


class GenerationEventInline(admin.TabularInline):
    model = GenerationEvent
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "from_status", "to_status", "actor", "note"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _confirm(
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    verb: str,
    lines: list[str],
    reason_label: str = "",
) -> TemplateResponse | None:
    """None once the person confirmed (and gave a reason, when one is asked for);
    otherwise the confirmation page."""
    if request.POST.get("confirmed") == "yes" and (
        not reason_label or request.POST.get("reason", "").strip()
    ):
        return None
    return TemplateResponse(
        request,
        "admin/knowledge_bases/confirm_action.html",
        {
            "title": title,
            "question": f"Are you sure you want to {verb}?",
            "lines": lines,
            "queryset": queryset,
            "action": action,
            "verb": verb,
            "reason_label": reason_label,
            "reason_missing": bool(reason_label) and request.POST.get("confirmed") == "yes",
        },
    )


def _selected_kbs(queryset: QuerySet[Generation]) -> list[KnowledgeBase]:
    """The knowledge bases of the selected generations, each once, by slug."""
    kbs = {g.knowledge_base for g in queryset.select_related("knowledge_base")}
    return sorted(kbs, key=lambda kb: kb.slug)


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = [
        "knowledge_base",
        "number",
        "status",
        "chunk_count",
        "promotable",
        "size_on_disk",
        "check_passed",
        "quality_passed",
        "embedder_fingerprint",
        "created_at",
        "activated_at",
        "archived_at",
    ]
    list_filter = ["status", "knowledge_base"]
    readonly_fields = [f.name for f in Generation._meta.fields]
    inlines = [GenerationEventInline]
    actions = ["promote", "rollback", "collect"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="promote")
    def promotable(self, obj: Generation) -> str:
        return promote_verdict(obj.knowledge_base, obj).blocker or "allowed"

    @admin.display(description="size on disk")
    def size_on_disk(self, obj: Generation) -> str:
        if obj.files_deleted_at:
            return "deleted"
        return f"{generation_size_on_disk(obj) / 1e6:.1f} MB"

    @admin.action(description="Promote the selected generation")
    def promote(
        self, request: HttpRequest, queryset: QuerySet[Generation]
    ) -> TemplateResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one generation to promote.", messages.ERROR)
            return None
        generation = queryset.select_related("knowledge_base").get()
        kb = generation.knowledge_base
        verdict = promote_verdict(kb, generation)
        # A quality regression may be overridden with a reason (asked for on the
        # confirmation page); anything else is said now, not after a confirmation page.
        if not verdict.allowed and not verdict.quality_regression:
            self.message_user(
                request,
                f"Generation {generation.number} of {kb.slug} cannot be promoted: "
                f"{verdict.blocker}",
                messages.ERROR,
            )
            return None
        lines = [f"now active: {kb.active_generation or 'none'}"]
        if verdict.quality_regression:
            lines.append(f"It failed the quality gate: {verdict.blocker}.")
        page = _confirm(
            request,
            queryset,
            action="promote",
            title="Promote a generation",
            verb=f"promote generation {generation.number} of {kb.slug}",
            lines=lines,
            reason_label="Why promote it despite the regression (recorded with your name)"
            if verdict.quality_regression
            else "",
        )
        if page is not None:
            return page
        try:
            generation_promote(
                kb=kb,
                number=generation.number,
                actor=request.user,
                override_quality=request.POST.get("reason", "")
                if verdict.quality_regression
                else "",
            )
        except RagStudioError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"Generation {generation.number} of {kb.slug} is active.")
        return None

    @admin.action(description="Roll back the knowledge base of the selected generation")
    def rollback(
        self, request: HttpRequest, queryset: QuerySet[Generation]
    ) -> TemplateResponse | None:
        kbs = _selected_kbs(queryset)
        page = _confirm(
            request,
            queryset,
            action="rollback",
            title="Roll back",
            verb="roll back " + ", ".join(kb.slug for kb in kbs),
            lines=[_rollback_line(kb) for kb in kbs],
        )
        if page is not None:
            return page
        for kb in kbs:
            try:
                generation = generation_rollback(kb=kb, actor=request.user)
                self.message_user(request, f"{kb.slug}: generation {generation.number} is active.")
            except RagStudioError as exc:
                self.message_user(request, f"{kb.slug}: {exc.message}", messages.ERROR)
        return None

    @admin.action(description="Collect old generations of the selected knowledge bases (GC)")
    def collect(
        self, request: HttpRequest, queryset: QuerySet[Generation]
    ) -> TemplateResponse | None:
        kbs = _selected_kbs(queryset)
        page = _confirm(
            request,
            queryset,
            action="collect",
            title="Collect old generations",
            verb="delete generations past retention for " + ", ".join(kb.slug for kb in kbs),
            lines=[
                f"{kb.slug}: keeps the active one and the newest {kb.retention} archived"
                for kb in kbs
            ],
        )
        if page is not None:
            return page
        for kb in kbs:
            result = generations_gc(kb=kb, actor=request.user)
            self.message_user(request, f"{kb.slug}: collected {result['collected'] or 'nothing'}.")
        return None


def _rollback_line(kb: KnowledgeBase) -> str:
    verdict = rollback_verdict(kb)
    if verdict.target is None:
        return f"{kb.slug}: {verdict.blocker}"
    return f"{kb.slug}: active {kb.active_generation}, back to #{verdict.target.number}"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = [
        "key_prefix",
        "user",
        "name",
        "scope",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at", "scope"]
    fields = ["user", "name", "scope", "knowledge_bases", "expires_at"]
    readonly_fields = ["key_prefix", "created_at", "last_used_at", "revoked_at"]
    filter_horizontal = ["knowledge_bases"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: object, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, token = ApiToken.issue(
            user=obj.user, name=obj.name, scope=obj.scope, expires_at=obj.expires_at
        )
        obj.pk = row.pk  # the form's knowledge bases are saved onto it next
        AuditEvent.record(
            AuditEvent.Action.KEY_CREATE,
            actor=request.user,
            target=f"key {row.key_prefix} {row.name}",
            detail={"scope": row.scope, "owner": obj.user.get_username(), "admin": True},
        )
        messages.warning(request, f"New API token (shown once, copy it now): {token}")

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: object) -> None:
        from django.utils import timezone

        live = list(queryset.filter(revoked_at__isnull=True))  # type: ignore[attr-defined]
        ApiToken.objects.filter(pk__in=[k.pk for k in live]).update(revoked_at=timezone.now())
        for key in live:
            AuditEvent.record(
                AuditEvent.Action.KEY_REVOKE,
                actor=request.user,
                target=f"key {key.key_prefix} {key.name}",
                detail={"owner": key.user.get_username(), "admin": True},
            )
        self.message_user(request, f"Revoked {len(live)} token(s).")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the trail is written by the app, never edited."""

    list_display = ["created_at", "actor_name", "via", "ip", "action", "kb_slug", "target"]
    list_filter = ["action", "via", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["actor_name", "kb_slug", "target", "ip"]
    date_hierarchy = "created_at"
    list_select_related = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Transfer)
class TransferAdmin(admin.ModelAdmin):
    """Exports and imports, read-only (they are started from the pages, API or CLI)."""

    list_display = ["created_at", "kind", "kb_slug", "status", "stage", "size", "created_by"]
    list_filter = ["kind", "status"]
    search_fields = ["kb_slug", "error_message"]
    list_select_related = ["created_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
