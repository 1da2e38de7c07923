"""HTMX pages for knowledge bases, their documents and generations. Each view renders the
whole page for a normal request and only its fragment for an htmx request."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ingestion.selectors import rebuild_in_progress, recent_jobs
from ingestion.services import (
    IncomingFile,
    UploadMode,
    document_delete,
    document_file,
    document_get,
    document_replace,
    document_version_restore,
    documents_upload,
)
from knowledge_bases.forms import (
    ApiKeyForm,
    KnowledgeBaseForm,
    RebuildForm,
    ReplaceForm,
    UploadForm,
)
from knowledge_bases.generations import (
    generation_size_on_disk,
    generations_of,
    promote_verdict,
    rollback_verdict,
)
from knowledge_bases.models import Generation, KnowledgeBase, RebuildPlanRun
from knowledge_bases.selectors import (
    document_versions,
    documents_of,
    knowledge_base_can_change,
    knowledge_base_get,
    knowledge_base_ref,
    knowledge_bases_with_stats,
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
    rebuild_plan_get,
    rebuild_plan_of,
    rebuild_plan_request,
)
from ragstudio.core.errors import RagStudioError, ValidationError
from ragstudio.views import attachment_response, get_or_404, is_htmx
from search.services import MAX_DOCUMENT_CHUNKS, document_chunks


def _form_error(form: Any, exc: RagStudioError) -> None:
    field = exc.extra.get("field")
    form.add_error(field if field in form.fields else None, exc.message)


@login_required
def kb_list(request: HttpRequest) -> HttpResponse:
    form = KnowledgeBaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            kb = knowledge_base_create(owner=request.user, **form.cleaned_data)
        except RagStudioError as exc:
            _form_error(form, exc)
        else:
            messages.success(request, f"Created {kb.name}.")
            return redirect("kb-detail", slug=knowledge_base_ref(kb, request.user))
    status = 422 if request.method == "POST" else 200
    kbs = list(knowledge_bases_with_stats(request.user))
    slugs = Counter(kb.slug for kb in kbs)
    rows = [(kb, knowledge_base_ref(kb, request.user, slugs)) for kb in kbs]
    return render(request, "knowledge_bases/list.html", {"kbs": rows, "form": form}, status=status)


def _detail_context(request: HttpRequest, kb: KnowledgeBase) -> dict[str, Any]:
    jobs = recent_jobs(kb)
    return {
        "kb": kb,
        "kb_ref": knowledge_base_ref(kb, request.user),
        "documents": documents_of(kb)[:1000],
        "document_count": documents_of(kb).count(),
        "jobs": jobs,
        "jobs_live": any(not j.is_finished for j in jobs),
        "can_change": knowledge_base_can_change(kb, request.user),
        "max_upload_bytes": settings.RAGSTUDIO_MAX_UPLOAD_BYTES,
    }


@login_required
def kb_detail(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user)
    context = _detail_context(request, kb)
    context["form"] = UploadForm()
    if is_htmx(request):
        # The jobs and documents fragments refresh together while a job runs.
        return render(request, "knowledge_bases/_live.html", context)
    return render(request, "knowledge_bases/detail.html", context)


@login_required
@require_POST
def kb_upload(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    form = UploadForm(request.POST, request.FILES)
    result = None
    error = ""
    if not form.is_valid():
        error = (
            "Choose at least one file to upload."
            if not request.FILES.getlist("files")
            else " ".join(str(e) for errors in form.errors.values() for e in errors)
        )
    else:
        files = [IncomingFile(name=f.name, chunks=f.chunks()) for f in form.cleaned_data["files"]]
        try:
            result = documents_upload(
                kb=kb,
                files=files,
                user=request.user,
                oversized=getattr(request, "oversized_uploads", []),
                mode=UploadMode.NEW if form.cleaned_data["as_new"] else UploadMode.REPLACE,
                password=form.cleaned_data["password"],
            )
        except RagStudioError as exc:
            error = exc.message
    if is_htmx(request):
        context = {**_detail_context(request, kb), "result": result, "error": error}
        return render(
            request, "knowledge_bases/_upload_result.html", context, status=422 if error else 200
        )
    if error:
        messages.error(request, error)
        return redirect("kb-detail", slug=knowledge_base_ref(kb, request.user))
    assert result is not None
    for doc in result.accepted:
        messages.success(request, f"Accepted {doc.original_filename}.")
    for doc in result.versions:
        messages.success(request, f"{doc.original_filename}: new version v{doc.version}.")
    for name, existing in result.unchanged:
        messages.info(request, f"{name}: unchanged (the same as v{existing.version}).")
    for name, existing in result.duplicates:
        messages.warning(
            request, f"{name}: duplicate of {existing.original_filename}, not stored again."
        )
    for name, reason in result.rejected:
        messages.error(request, f"{name}: rejected ({reason}).")
    if result.job is not None:
        return redirect("job-detail", job_id=result.job.pk)
    return redirect("kb-detail", slug=knowledge_base_ref(kb, request.user))


@login_required
def kb_document(request: HttpRequest, slug: str, document_id: int) -> HttpResponse:
    """A document: its versions (who, when, size, chunks changed), which one serves,
    restoring an older one, uploading a new one."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user)
    document = get_or_404(document_get, kb=kb, document_id=document_id)
    chunks = document_chunks(kb=kb, document=document)
    # Consecutive chunks of one place (heading path, slide, sheet, page) under one heading.
    groups: list[dict[str, Any]] = []
    for chunk in chunks:
        place = " · ".join(
            p
            for p in (
                f"slide {chunk.slide}" if chunk.slide else "",
                f"sheet {chunk.sheet}" if chunk.sheet and chunk.sheet != chunk.section else "",
                chunk.section or "",
                f"page {chunk.page}" if chunk.page else "",
                f"record {chunk.record_id}" if chunk.record_id else "",
            )
            if p
        )
        if not groups or groups[-1]["place"] != place:
            groups.append({"place": place, "chunks": []})
        groups[-1]["chunks"].append(chunk)
    context = {
        "kb": kb,
        "kb_ref": knowledge_base_ref(kb, request.user),
        "document": document,
        "chunk_groups": groups,
        "chunks_cut": len(chunks) >= MAX_DOCUMENT_CHUNKS,
        "versions": list(document_versions(document)),
        "can_change": knowledge_base_can_change(kb, request.user),
        "form": ReplaceForm(),
        "max_upload_bytes": settings.RAGSTUDIO_MAX_UPLOAD_BYTES,
    }
    return render(request, "knowledge_bases/document.html", context)


@login_required
def kb_document_file(request: HttpRequest, slug: str, document_id: int) -> HttpResponse:
    """The document's original file (its latest version), to download."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user)
    document = get_or_404(document_get, kb=kb, document_id=document_id)
    data = get_or_404(document_file, document=document)
    return attachment_response(data, document.original_filename, document.content_type)


@login_required
@require_POST
def kb_document_replace(request: HttpRequest, slug: str, document_id: int) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    document = get_or_404(document_get, kb=kb, document_id=document_id)
    form = ReplaceForm(request.POST, request.FILES)
    back = redirect(
        "kb-document", slug=knowledge_base_ref(kb, request.user), document_id=document.pk
    )
    if not form.is_valid():
        messages.error(request, "Choose a file for the new version.")
        return back
    upload = form.cleaned_data["file"]
    try:
        result = document_replace(
            kb=kb,
            document=document,
            file=IncomingFile(name=upload.name, chunks=upload.chunks()),
            user=request.user,
            password=form.cleaned_data["password"],
        )
    except RagStudioError as exc:
        messages.error(request, exc.message)
        return back
    for name, reason in result.rejected:
        messages.error(request, f"{name}: rejected ({reason}).")
    for name, existing in result.duplicates:
        messages.warning(request, f"{name}: the same content as {existing.original_filename}.")
    for name, _doc in result.unchanged:
        messages.info(request, f"{name}: unchanged (the same as the latest version).")
    for doc in result.versions:
        messages.success(request, f"New version v{doc.version}: it serves once indexed.")
    return back


@login_required
@require_POST
def kb_document_restore(
    request: HttpRequest, slug: str, document_id: int, number: int
) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    document = get_or_404(document_get, kb=kb, document_id=document_id)
    try:
        document_version_restore(kb=kb, document=document, number=number, user=request.user)
    except RagStudioError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, f"Version {number} restored as v{document.version}: it serves once indexed."
        )
    return redirect(
        "kb-document", slug=knowledge_base_ref(kb, request.user), document_id=document.pk
    )


@login_required
@require_POST
def kb_document_delete(request: HttpRequest, slug: str, document_id: int) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    try:
        document = get_or_404(document_delete, kb=kb, document_id=document_id)
    except RagStudioError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Deleted {document.original_filename}.")
    if is_htmx(request):
        kb.refresh_from_db()
        return render(request, "knowledge_bases/_live.html", _detail_context(request, kb))
    return redirect("kb-detail", slug=knowledge_base_ref(kb, request.user))


# --- generations ---------------------------------------------------------------------


def _generations_context(
    request: HttpRequest, kb: KnowledgeBase, form: RebuildForm | None = None
) -> dict[str, Any]:
    kb.refresh_from_db()
    generations = list(generations_of(kb))
    rows = []
    for g in generations:
        verdict = promote_verdict(kb, g)
        rows.append(
            {
                "g": g,
                "blocker": verdict.blocker,
                "quality_regression": verdict.quality_regression,
                "size": generation_size_on_disk(g),
            }
        )
    rollback = rollback_verdict(kb)
    rebuilding = rebuild_in_progress(kb.pk)
    return {
        "kb": kb,
        "kb_ref": knowledge_base_ref(kb, request.user),
        "rows": rows,
        "rollback_target": rollback.target,
        "rollback_blocker": rollback.blocker,
        "rebuilding": rebuilding,
        "can_change": knowledge_base_can_change(kb, request.user),
        "form": form or RebuildForm(initial={"auto_promote": True}),
        "live": rebuilding is not None
        or any(g.status == Generation.Status.BUILDING for g in generations),
    }


def _generations_response(
    request: HttpRequest,
    kb: KnowledgeBase,
    form: RebuildForm | None = None,
    status: int = 200,
    plan_run: RebuildPlanRun | None = None,
) -> HttpResponse:
    context = _generations_context(request, kb, form)
    context["plan_run"] = plan_run
    context["plan"] = rebuild_plan_of(plan_run) if plan_run is not None else None
    template = (
        "knowledge_bases/_generations.html"
        if is_htmx(request)
        else "knowledge_bases/generations.html"
    )
    return render(request, template, context, status=status)


@login_required
def kb_generations(request: HttpRequest, slug: str) -> HttpResponse:
    """The generations; ``?plan=<id>``: with that rebuild plan under the form."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user)
    plan = request.GET.get("plan", "")
    plan_run = None
    if plan.isdigit() and knowledge_base_can_change(kb, request.user):
        plan_run = RebuildPlanRun.objects.filter(knowledge_base=kb, pk=int(plan)).first()
    return _generations_response(request, kb, plan_run=plan_run)


@login_required
def kb_rebuild_plan(request: HttpRequest, slug: str, plan_id: int) -> HttpResponse:
    """A rebuild plan's box: pending (it polls itself), failed, or the plan."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    plan_run = get_or_404(rebuild_plan_get, kb=kb, plan_id=plan_id)
    context = {
        "kb_ref": knowledge_base_ref(kb, request.user),
        "plan_run": plan_run,
        "plan": rebuild_plan_of(plan_run),
    }
    return render(request, "knowledge_bases/_plan.html", context)


GENERATION_ACTIONS = ("promote", "rollback", "gc")


@login_required
@require_POST
def kb_generation_action(request: HttpRequest, slug: str, action: str) -> HttpResponse:
    """promote (with `number`), rollback, gc: the result is a message above the table."""
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    if action not in GENERATION_ACTIONS:
        raise Http404(f"no generation action {action!r}")
    try:
        if action == "promote":
            number = request.POST.get("number", "")
            if not number.isdigit():
                raise ValidationError("choose a generation to promote", {"field": "number"})
            generation = generation_promote(
                kb=kb,
                number=int(number),
                actor=request.user,
                override_quality=request.POST.get("override_quality", ""),
            )
            messages.success(request, f"Generation #{generation.number} is active.")
        elif action == "rollback":
            generation = generation_rollback(kb=kb, actor=request.user)
            messages.success(request, f"Rolled back: generation #{generation.number} is active.")
        else:
            result = generations_gc(kb=kb, actor=request.user)
            collected = ", ".join(f"#{n}" for n in result["collected"]) or "nothing"
            messages.success(request, f"Garbage collection: collected {collected}.")
    except RagStudioError as exc:
        messages.error(request, exc.message)
    if is_htmx(request):
        return _generations_response(request, kb)
    return redirect("kb-generations", slug=knowledge_base_ref(kb, request.user))


@login_required
@require_POST
def kb_rebuild(request: HttpRequest, slug: str) -> HttpResponse:
    kb = get_or_404(knowledge_base_get, slug=slug, user=request.user, change=True)
    form = RebuildForm(request.POST)
    if form.is_valid() and request.POST.get("plan"):
        data = form.cleaned_data
        try:
            plan_run = rebuild_plan_request(
                kb=kb,
                user=request.user,
                embedder=data["embedder"] or None,
                chunk_size=data["chunk_size"],
                chunk_overlap=data["chunk_overlap"],
                language=data["language"] or None,
            )
        except RagStudioError as exc:
            _form_error(form, exc)
        else:
            return _generations_response(request, kb, form, plan_run=plan_run)
    elif form.is_valid():
        data = form.cleaned_data
        try:
            job = generation_rebuild_start(
                kb=kb,
                user=request.user,
                embedder=data["embedder"] or None,
                chunk_size=data["chunk_size"],
                chunk_overlap=data["chunk_overlap"],
                language=data["language"] or None,
                auto_promote=data["auto_promote"],
            )
        except RagStudioError as exc:
            _form_error(form, exc)
        else:
            messages.success(
                request,
                f"Rebuild started: job #{job.pk} builds generation #{job.generation.number}.",
            )
            if is_htmx(request):
                return _generations_response(request, kb)
            return redirect("kb-generations", slug=knowledge_base_ref(kb, request.user))
    return _generations_response(request, kb, form, status=422)


NEW_KEY = "new_api_key"


@login_required
def api_keys(request: HttpRequest) -> HttpResponse:
    """The user's API keys (staff: everyone's): make one (its secret shown once), revoke."""
    kbs = list(knowledge_bases_with_stats(request.user))
    slugs = Counter(kb.slug for kb in kbs)
    choices = [(knowledge_base_ref(kb, request.user, slugs), kb.name) for kb in kbs]
    form = ApiKeyForm(request.POST or None, choices=choices)
    if request.method == "POST" and form.is_valid():
        try:
            row, secret = api_key_create(user=request.user, **form.cleaned_data)
        except RagStudioError as exc:
            _form_error(form, exc)
        else:
            # Shown by the page the redirect loads, once (a reload makes no second key).
            request.session[NEW_KEY] = {"name": row.name, "secret": secret}
            return redirect("api-keys")
    created = request.session.pop(NEW_KEY, None) if request.method == "GET" else None
    status = 422 if request.method == "POST" else 200
    context = {"keys": list(api_keys_of(request.user)), "form": form, "created": created}
    response = render(request, "knowledge_bases/keys.html", context, status=status)
    response["Cache-Control"] = "no-store"  # it may hold a secret
    return response


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_or_404(api_key_revoke, user=request.user, key_id=key_id)
    messages.success(request, f"Revoked {key.name or key.key_prefix}: it no longer works.")
    return redirect("api-keys")
