"""Ingestion services: uploads, document versions and deletes, and the job queue."""

from ingestion.services.documents import (
    document_delete,
    document_file,
    document_get,
    document_replace,
    document_version_restore,
)
from ingestion.services.queue import (
    batch_sizes_validate,
    enqueue_job,
    ingestion_job_cancel,
    ingestion_job_create,
    ingestion_job_retry,
    job_queue,
)
from ingestion.services.sources import (
    SyncResult,
    source_create,
    source_delete,
    source_sync,
    source_sync_request,
    source_update,
    sources_due,
)
from ingestion.services.uploads import (
    IncomingFile,
    UploadMode,
    UploadResult,
    documents_upload,
)

__all__ = [
    "IncomingFile",
    "SyncResult",
    "UploadMode",
    "UploadResult",
    "batch_sizes_validate",
    "document_delete",
    "document_file",
    "document_get",
    "document_replace",
    "document_version_restore",
    "documents_upload",
    "enqueue_job",
    "ingestion_job_cancel",
    "ingestion_job_create",
    "ingestion_job_retry",
    "job_queue",
    "source_create",
    "source_delete",
    "source_sync",
    "source_sync_request",
    "source_update",
    "sources_due",
]
