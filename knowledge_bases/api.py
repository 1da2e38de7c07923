from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Body, File, Form, Router, Status
from ninja.files import UploadedFile

from ingestion.schemas import JobOut, UploadOut
from ingestion.services import (
    IncomingFile,
    UploadMode,
    UploadResult,
    document_delete,
    document_file,
    document_get,
    document_replace,
    document_version_restore,
    documents_upload,
)
from ingestion.services.uploads import MAX_PASSWORD_CHARS
from knowledge_bases.generations import generations_of
from knowledge_bases.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    DocumentOut,
    DocumentVersionOut,
    ExportIn,
    GcOut,
    GenerationOut,
    KnowledgeBaseIn,
    KnowledgeBaseOut,
    KnowledgeBaseUpdateIn,
    PlanIn,
    PromoteIn,
    RebuildIn,
    RebuildPlanRunOut,
    TransferOut,
)
from knowledge_bases.selectors import (
    document_versions,
    documents_of,
    knowledge_base_get,
    knowledge_bases_visible_to,
)
from knowledge_bases.services import (
    api_key_create,
    api_key_revoke,
    api_keys_of,
    generation_promote,
    generation_rebuild_start,
    generation_rollback,
    generations_gc,
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_base_update,
    rebuild_plan_get,
    rebuild_plan_request,
)
from knowledge_bases.services.transfers import (
    transfer_archive,
    transfer_export_request,
    transfer_get,
    transfer_import_request,
    transfers_of,
)
from ragstudio.core.bounds import EMBED_BATCH_SIZE, STORE_BATCH_SIZE
from ragstudio.core.errors import ValidationError
from ragstudio.schemas import ERRORS
from ragstudio.views import attachment_response, file_attachment_response

router = Router(tags=["knowledge bases"])
transfers = Router(tags=["export and import"])
OPTIONAL_BODY = Body(None)  # an operation whose body may be left out
MODE_FORM = Form(UploadMode.REPLACE)
EXTERNAL_IDS_FORM = Form([])
PASSWORD_FORM = Form("", max_length=MAX_PASSWORD_CHARS)


@router.post("", response={201: KnowledgeBaseOut, **ERRORS})
def create_kb(request: HttpRequest, payload: KnowledgeBaseIn):  # type: ignore[no-untyped-def]
    kb = knowledge_base_create(owner=request.user, **payload.dict())
    return Status(201, kb)


@router.post("/import", response={202: TransferOut, **ERRORS})
def import_kb(  # type: ignore[no-untyped-def]
    request: HttpRequest,
    file: File[UploadedFile],
    slug: str = Form(None, max_length=64),  # type: ignore[assignment]
    documents_only: bool = Form(False),  # type: ignore[assignment]
):
    """Import a knowledge base from an archive made by an export (multipart field
    `file`), as yours: under its own slug or `slug`. Queued (202): follow it at
    `/api/transfers/{id}`. The archive is checked whole first (checksums, format); one
    made by another model is refused unless `documents_only`, which imports the documents
    and indexes them again here. Archives over RAGSTUDIO_MAX_UPLOAD_BYTES are imported
    with `manage.py kb import`."""
    oversized = getattr(request, "oversized_uploads", [])
    if oversized:
        raise ValidationError(
            "the archive is larger than this server takes over HTTP "
            "(RAGSTUDIO_MAX_UPLOAD_BYTES): import it with `manage.py kb import`",
            {"field": "file"},
        )
    transfer = transfer_import_request(
        chunks=file.chunks(), user=request.user, slug=slug, documents_only=documents_only
    )
    return Status(202, transfer)


@router.get("", response={200: list[KnowledgeBaseOut], **ERRORS})
def list_kbs(request: HttpRequest):  # type: ignore[no-untyped-def]
    return list(knowledge_bases_visible_to(request.user))


@router.get("/{slug}", response={200: KnowledgeBaseOut, **ERRORS})
def get_kb(request: HttpRequest, slug: str):  # type: ignore[no-untyped-def]
    return knowledge_base_get(slug=slug, user=request.user)


@router.patch("/{slug}", response={200: KnowledgeBaseOut, **ERRORS})
def update_kb(request: HttpRequest, slug: str, payload: KnowledgeBaseUpdateIn):  # type: ignore[no-untyped-def]
    """Change the name, the description or the quality gate (fields left out stay)."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    return knowledge_base_update(kb=kb, actor=request.user, **payload.dict(exclude_none=True))


@router.delete("/{slug}", response={204: None, **ERRORS})
def delete_kb(request: HttpRequest, slug: str):  # type: ignore[no-untyped-def]
    """Delete a knowledge base with its documents, generations, tables, indexes and
    uploaded files. 409 while one of its jobs is queued or running."""
    knowledge_base_delete(kb=knowledge_base_get(slug=slug, user=request.user, change=True))
    return Status(204, None)


@router.post("/{slug}/export", response={202: TransferOut, **ERRORS})
def export_kb(request: HttpRequest, slug: str, payload: ExportIn = OPTIONAL_BODY):  # type: ignore[no-untyped-def]
    """Export the knowledge base into one archive: its documents and their versions, the
    serving generation's vectors and passages (every retained one with
    `all_generations`), evaluation sets and runs, settings. Queued (202): follow it at
    `/api/transfers/{id}`, then download it from its `download_url`."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    transfer = transfer_export_request(
        kb=kb,
        user=request.user,
        all_generations=bool(payload and payload.all_generations),
    )
    return Status(202, transfer)


@router.get("/{slug}/documents", response={200: list[DocumentOut], **ERRORS})
def list_documents(request: HttpRequest, slug: str):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user)
    return list(documents_of(kb))


def _upload_body(result: UploadResult) -> dict[str, Any]:
    body = {
        "accepted": result.accepted,
        "versions": result.versions,
        "unchanged": [
            {"filename": name, "document_id": doc.pk, "version": doc.version}
            for name, doc in result.unchanged
        ],
        "duplicates": [
            {"filename": name, "document_id": doc.pk, "existing_filename": doc.original_filename}
            for name, doc in result.duplicates
        ],
        "rejected": [{"filename": name, "reason": reason} for name, reason in result.rejected],
        "job": result.job,
    }
    if not result.queued and not result.duplicates and not result.unchanged:
        raise ValidationError("no file was accepted", {"rejected": body["rejected"]})
    return body


@router.post("/{slug}/documents", response={200: UploadOut, 202: UploadOut, **ERRORS})
def upload_documents(  # type: ignore[no-untyped-def]
    request: HttpRequest,
    slug: str,
    files: File[list[UploadedFile]],
    # Plain bounded integers in the schema (a form field has no null); left out: None.
    store_batch_size: int = Form(  # type: ignore[assignment]
        None, ge=STORE_BATCH_SIZE.low, le=STORE_BATCH_SIZE.high
    ),
    embed_batch_size: int = Form(  # type: ignore[assignment]
        None, ge=EMBED_BATCH_SIZE.low, le=EMBED_BATCH_SIZE.high
    ),
    mode: UploadMode = MODE_FORM,
    external_id: list[str] = EXTERNAL_IDS_FORM,
    password: str = PASSWORD_FORM,
):
    """Upload one or many files (multipart field `files`). A file whose name a document
    of the KB has (or whose `external_id`, given once per file in the same order, one
    has) becomes a new version of it, replacing it in one step once indexed; the same
    content is reported `unchanged`. `mode=new` adds every file as a separate document.
    What changed is queued in one ingestion job (202); duplicates and rejected files are
    listed with reasons. `password` opens the encrypted PDFs and Office files among them
    (they are stored decrypted; the password is not kept); a wrong one rejects them."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    if external_id and len(external_id) != len(files):
        raise ValidationError(
            f"{len(external_id)} external ids for {len(files)} files: give one per file",
            {"field": "external_id"},
        )
    ids = [e[:500] for e in external_id] or [""] * len(files)
    result = documents_upload(
        kb=kb,
        files=[
            IncomingFile(name=f.name or "upload", chunks=f.chunks(), external_id=e)
            for f, e in zip(files, ids, strict=True)
        ],
        user=request.user,
        oversized=getattr(request, "oversized_uploads", []),
        store_batch_size=store_batch_size,
        embed_batch_size=embed_batch_size,
        mode=mode,
        password=password,
    )
    return Status(202 if result.job else 200, _upload_body(result))


@router.get("/{slug}/documents/{int:document_id}/content", response={200: None, **ERRORS})
def get_document_content(request: HttpRequest, slug: str, document_id: int):  # type: ignore[no-untyped-def]
    """The latest version's original file, as uploaded (an attachment)."""
    kb = knowledge_base_get(slug=slug, user=request.user)
    document = document_get(kb=kb, document_id=document_id)
    return attachment_response(
        document_file(document), document.original_filename, document.content_type
    )


@router.get("/{slug}/documents/{int:document_id}", response={200: DocumentOut, **ERRORS})
def get_document(request: HttpRequest, slug: str, document_id: int):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user)
    return document_get(kb=kb, document_id=document_id)


@router.put(
    "/{slug}/documents/{int:document_id}", response={200: UploadOut, 202: UploadOut, **ERRORS}
)
def replace_document(  # type: ignore[no-untyped-def]
    request: HttpRequest,
    slug: str,
    document_id: int,
    file: File[UploadedFile],
    password: str = PASSWORD_FORM,
):
    """A new version of the document from `file` (multipart), whatever the file's name;
    searches find the previous version until the new one is wholly indexed, then the new
    one only. The same content as the latest version is `unchanged` (200)."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    document = document_get(kb=kb, document_id=document_id)
    result = document_replace(
        kb=kb,
        document=document,
        file=IncomingFile(name=file.name or document.original_filename, chunks=file.chunks()),
        user=request.user,
        password=password,
    )
    return Status(202 if result.job else 200, _upload_body(result))


@router.get(
    "/{slug}/documents/{int:document_id}/versions",
    response={200: list[DocumentVersionOut], **ERRORS},
)
def list_versions(request: HttpRequest, slug: str, document_id: int):  # type: ignore[no-untyped-def]
    """Every version of the document, newest first: who, when, size, chunks changed."""
    kb = knowledge_base_get(slug=slug, user=request.user)
    return list(document_versions(document_get(kb=kb, document_id=document_id)))


@router.post(
    "/{slug}/documents/{int:document_id}/versions/{int:number}/restore",
    response={202: JobOut, **ERRORS},
)
def restore_version(request: HttpRequest, slug: str, document_id: int, number: int):  # type: ignore[no-untyped-def]
    """Make an older version current again, as a new version (history only grows); 409
    when it has the latest version's content."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    document = document_get(kb=kb, document_id=document_id)
    job = document_version_restore(kb=kb, document=document, number=number, user=request.user)
    return Status(202, job)


@router.delete("/{slug}/documents/{int:document_id}", response={204: None, **ERRORS})
def delete_document(request: HttpRequest, slug: str, document_id: int):  # type: ignore[no-untyped-def]
    """Delete a document (every version) and its chunks from the active generation. 409
    while a job of the KB is queued or running."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    document_delete(kb=kb, document_id=document_id)
    return Status(204, None)


@router.get("/{slug}/generations", response={200: list[GenerationOut], **ERRORS})
def list_generations(request: HttpRequest, slug: str):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user)
    return list(generations_of(kb))


@router.post("/{slug}/generations/rebuild", response={202: JobOut | RebuildPlanRunOut, **ERRORS})
def rebuild_generation(request: HttpRequest, slug: str, payload: RebuildIn):  # type: ignore[no-untyped-def]
    """Build a new generation from all documents, with the KB's settings or new ones, while
    the active one keeps serving. With auto_promote it becomes active once it passes its
    check and the quality gate. 409 when a rebuild is already in progress. With dry_run:
    the plan instead (as `POST .../generations/plans`), nothing spent."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    options = payload.dict()
    if options.pop("dry_run"):
        return Status(202, _plan_request(request, kb, options))
    job = generation_rebuild_start(kb=kb, user=request.user, **options)
    return Status(202, job)


@router.post("/{slug}/generations/plans", response={202: RebuildPlanRunOut, **ERRORS})
def plan_rebuild(request: HttpRequest, slug: str, payload: PlanIn):  # type: ignore[no-untyped-def]
    """Plan a rebuild with these settings (202): a worker reads and chunks every document
    as the rebuild would and reports the settings diff, chunks, reused vectors, what to
    embed, ETA and disk size; nothing is embedded or written. Poll
    `GET .../generations/plans/{id}`. The same settings asked again while their plan is
    under way get that plan."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    return Status(202, _plan_request(request, kb, payload.dict()))


@router.get("/{slug}/generations/plans/{plan_id}", response={200: RebuildPlanRunOut, **ERRORS})
def get_plan(request: HttpRequest, slug: str, plan_id: int):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    return rebuild_plan_get(kb=kb, plan_id=plan_id)


def _plan_request(request: HttpRequest, kb: Any, options: dict[str, Any]) -> Any:
    return rebuild_plan_request(
        kb=kb,
        user=request.user,
        embedder=options["embedder"],
        chunk_size=options["chunk_size"],
        chunk_overlap=options["chunk_overlap"],
        language=options["language"],
    )


@router.post("/{slug}/generations/{int:number}/promote", response={200: GenerationOut, **ERRORS})
def promote_generation(  # type: ignore[no-untyped-def]
    request: HttpRequest, slug: str, number: int, payload: PromoteIn | None = OPTIONAL_BODY
):
    """Make a ready (checked) or archived generation the one searches use. 409 when the
    generation is building, failed, collected, already active, or failed its check; 409
    with the metrics (`extra.quality`) when it failed the quality gate and no
    `override_quality` reason is given."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    reason = payload.override_quality if payload is not None else ""
    return generation_promote(kb=kb, number=number, actor=request.user, override_quality=reason)


@router.post("/{slug}/generations/rollback", response={200: GenerationOut, **ERRORS})
def rollback_generation(request: HttpRequest, slug: str):  # type: ignore[no-untyped-def]
    """One step back to the newest archived generation older than the active one."""
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    return generation_rollback(kb=kb, actor=request.user)


@router.post("/{slug}/generations/gc", response={200: GcOut, **ERRORS})
def gc_generations(request: HttpRequest, slug: str):  # type: ignore[no-untyped-def]
    kb = knowledge_base_get(slug=slug, user=request.user, change=True)
    return generations_gc(kb=kb, actor=request.user)


keys = Router(tags=["keys"])


@keys.get("", response={200: list[ApiKeyOut], **ERRORS})
def list_keys(request: HttpRequest):  # type: ignore[no-untyped-def]
    """Your API keys (staff: everyone's), newest first; secrets are never shown again."""
    return list(api_keys_of(request.user))


@keys.post("", response={201: ApiKeyCreatedOut, **ERRORS})
def create_key(request: HttpRequest, payload: ApiKeyIn):  # type: ignore[no-untyped-def]
    """A new key acting as you: `read` (search and read) or `write`, limited to some
    knowledge bases or not, expiring or not. Its secret (`key`) is in this answer only."""
    row, secret = api_key_create(user=request.user, **payload.dict())
    row.key = secret  # type: ignore[attr-defined]  # for this answer only
    return Status(201, row)


@keys.delete("/{int:key_id}", response={204: None, **ERRORS})
def revoke_key(request: HttpRequest, key_id: int):  # type: ignore[no-untyped-def]
    """Revoke a key: it stops working at once."""
    api_key_revoke(user=request.user, key_id=key_id)
    return Status(204, None)


@transfers.get("", response={200: list[TransferOut], **ERRORS})
def list_transfers(request: HttpRequest):  # type: ignore[no-untyped-def]
    """Your exports and imports, newest first (the last 100)."""
    return list(transfers_of(request.user)[:100])


@transfers.get("/{int:transfer_id}", response={200: TransferOut, **ERRORS})
def get_transfer(request: HttpRequest, transfer_id: int):  # type: ignore[no-untyped-def]
    return transfer_get(pk=transfer_id, user=request.user)


@transfers.get("/{int:transfer_id}/download", response={200: None, **ERRORS})
def download_transfer(request: HttpRequest, transfer_id: int):  # type: ignore[no-untyped-def]
    """A finished export's archive."""
    transfer = transfer_get(pk=transfer_id, user=request.user)
    return file_attachment_response(transfer_archive(transfer))
