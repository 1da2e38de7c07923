from django.urls import path, register_converter

from ingestion import views as ingestion_views
from knowledge_bases import audit_views, transfer_views, views
from search import views as search_views


class KnowledgeBaseRef:
    """A KB's address in a page URL: its slug, or ``owner~slug`` (usernames never hold
    ``~``) where the slug alone names another KB the viewer sees."""

    regex = r"(?:[\w.@+-]*~)?[-a-zA-Z0-9_]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(KnowledgeBaseRef, "kbref")

urlpatterns = [
    path("", views.kb_list, name="kb-list"),
    path("keys/", views.api_keys, name="api-keys"),
    path("audit/", audit_views.audit_log, name="audit-log"),
    path("transfers/", transfer_views.transfers_page, name="transfers"),
    path("transfers/import/", transfer_views.transfer_import_view, name="transfer-import"),
    path(
        "transfers/<int:transfer_id>/download/",
        transfer_views.transfer_download,
        name="transfer-download",
    ),
    path("kbs/<kbref:slug>/export/", transfer_views.kb_export_view, name="kb-export"),
    path("keys/<int:key_id>/revoke/", views.api_key_revoke_view, name="api-key-revoke"),
    path("kbs/<kbref:slug>/", views.kb_detail, name="kb-detail"),
    path("kbs/<kbref:slug>/upload/", views.kb_upload, name="kb-upload"),
    path(
        "kbs/<kbref:slug>/documents/<int:document_id>/",
        views.kb_document,
        name="kb-document",
    ),
    path(
        "kbs/<kbref:slug>/documents/<int:document_id>/file/",
        views.kb_document_file,
        name="kb-document-file",
    ),
    path(
        "kbs/<kbref:slug>/documents/<int:document_id>/replace/",
        views.kb_document_replace,
        name="kb-document-replace",
    ),
    path(
        "kbs/<kbref:slug>/documents/<int:document_id>/versions/<int:number>/restore/",
        views.kb_document_restore,
        name="kb-document-restore",
    ),
    path(
        "kbs/<kbref:slug>/documents/<int:document_id>/delete/",
        views.kb_document_delete,
        name="kb-document-delete",
    ),
    path("kbs/<kbref:slug>/generations/", views.kb_generations, name="kb-generations"),
    path("kbs/<kbref:slug>/generations/rebuild/", views.kb_rebuild, name="kb-rebuild"),
    path(
        "kbs/<kbref:slug>/generations/plans/<int:plan_id>/",
        views.kb_rebuild_plan,
        name="kb-rebuild-plan",
    ),
    path(
        "kbs/<kbref:slug>/generations/<str:action>/",
        views.kb_generation_action,
        name="kb-generation-action",
    ),
    path("kbs/<kbref:slug>/sources/", ingestion_views.kb_sources, name="kb-sources"),
    path(
        "kbs/<kbref:slug>/sources/<int:source_id>/<str:action>/",
        ingestion_views.kb_source_action,
        name="kb-source-action",
    ),
    path("kbs/<kbref:slug>/search/", search_views.kb_search, name="kb-search"),
    path("kbs/<kbref:slug>/search/judge/", search_views.kb_judge, name="kb-judge"),
    path("kbs/<kbref:slug>/quality/", search_views.kb_quality, name="kb-quality"),
    path(
        "kbs/<kbref:slug>/quality/import/",
        search_views.kb_quality_import,
        name="kb-quality-import",
    ),
    path(
        "kbs/<kbref:slug>/quality/<str:name>/run/",
        search_views.kb_quality_run,
        name="kb-quality-run",
    ),
    path(
        "kbs/<kbref:slug>/quality/<str:name>/delete/",
        search_views.kb_quality_delete,
        name="kb-quality-delete",
    ),
]
