"""Ingestion services: uploads and deletes, the job queue, and generation actions."""

from ingestion.services.generations import (
    generation_promote,
    generation_rebuild_start,
    generation_rollback,
    generations_gc,
    generations_gc_all,
)
from ingestion.services.plan import RebuildPlan, SettingChange, generation_rebuild_plan
from ingestion.services.queue import (
    batch_sizes_validate,
    enqueue_job,
    ingestion_job_cancel,
    ingestion_job_create,
    ingestion_job_retry,
)
from ingestion.services.uploads import (
    IncomingFile,
    UploadResult,
    document_delete,
    documents_upload,
)

__all__ = [
    "IncomingFile",
    "RebuildPlan",
    "SettingChange",
    "UploadResult",
    "batch_sizes_validate",
    "document_delete",
    "documents_upload",
    "enqueue_job",
    "generation_promote",
    "generation_rebuild_plan",
    "generation_rebuild_start",
    "generation_rollback",
    "generations_gc",
    "generations_gc_all",
    "ingestion_job_cancel",
    "ingestion_job_create",
    "ingestion_job_retry",
]
