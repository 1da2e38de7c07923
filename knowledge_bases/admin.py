from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest

from knowledge_bases.models import ApiToken, Document, Generation, GenerationEvent, KnowledgeBase


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
    readonly_fields = ["active_generation", "embedding_dimensions", "created_at", "updated_at"]
    prepopulated_fields = {"slug": ["name"]}


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


class GenerationEventInline(admin.TabularInline):
    model = GenerationEvent
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "from_status", "to_status", "actor", "note"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = [
        "knowledge_base",
        "number",
        "status",
        "chunk_count",
        "embedder_fingerprint",
        "created_at",
        "activated_at",
    ]
    list_filter = ["status", "knowledge_base"]
    readonly_fields = [f.name for f in Generation._meta.fields]
    inlines = [GenerationEventInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["key_prefix", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    readonly_fields = ["key_prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: object, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, token = ApiToken.issue(user=obj.user, name=obj.name)
        obj.pk = row.pk
        messages.warning(request, f"New API token (shown once, copy it now): {token}")

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: object) -> None:
        from django.utils import timezone

        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())  # type: ignore[attr-defined]
        self.message_user(request, f"Revoked {count} token(s).")
