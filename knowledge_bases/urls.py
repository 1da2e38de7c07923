from django.urls import path

from knowledge_bases import views
from search import views as search_views

urlpatterns = [
    path("", views.kb_list, name="kb-list"),
    path("kbs/<slug:slug>/", views.kb_detail, name="kb-detail"),
    path("kbs/<slug:slug>/upload/", views.kb_upload, name="kb-upload"),
    path(
        "kbs/<slug:slug>/documents/<int:document_id>/delete/",
        views.kb_document_delete,
        name="kb-document-delete",
    ),
    path("kbs/<slug:slug>/generations/", views.kb_generations, name="kb-generations"),
    path("kbs/<slug:slug>/generations/rebuild/", views.kb_rebuild, name="kb-rebuild"),
    path(
        "kbs/<slug:slug>/generations/<str:action>/",
        views.kb_generation_action,
        name="kb-generation-action",
    ),
    path("kbs/<slug:slug>/search/", search_views.kb_search, name="kb-search"),
]
