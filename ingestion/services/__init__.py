"""Ingestion services: uploads and deletes, and the job queue."""

from ingestion.services.queue import (
    batch_sizes_validate,
    enqueue_job,
    ingestion_job_cancel,
    ingestion_job_create,
    ingestion_job_retry,
    job_queue,
)
from ingestion.services.uploads import (
    IncomingFile,
    UploadResult,
    document_delete,
    documents_upload,
)

__all__ = [
    "IncomingFile",
    "UploadResult",
    "batch_sizes_validate",
    "document_delete",
    "documents_upload",
    "enqueue_job",
    "ingestion_job_cancel",
    "ingestion_job_create",
    "ingestion_job_retry",
    "job_queue",
]
