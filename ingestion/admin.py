from django.contrib import admin

from ingestion.models import IngestionJob


@admin.register(IngestionJob)
class IngestionJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "knowledge_base",
        "generation",
        "kind",
        "status",
        "total",
        "embedded",
        "persisted",
        "skipped",
        "errors",
        "created_at",
    ]
    list_filter = ["status", "kind", "knowledge_base"]
    readonly_fields = [f.name for f in IngestionJob._meta.fields]
    exclude = ["documents"]
