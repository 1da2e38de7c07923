from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from ingestion.models import IngestionJob
from ingestion.services import ingestion_job_retry
from ragstudio.core.errors import RagStudioError


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
    actions = ["retry"]

    @admin.action(description="Retry the selected failed or cancelled jobs")
    def retry(self, request: HttpRequest, queryset: QuerySet[IngestionJob]) -> None:
        for job in queryset:
            try:
                retried = ingestion_job_retry(job=job, user=request.user)
            except RagStudioError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, f"Job {retried.pk} is queued.")
