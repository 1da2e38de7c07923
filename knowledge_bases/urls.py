from django.urls import path

from knowledge_bases import views

urlpatterns = [
    path("", views.kb_list, name="kb-list"),
    path("kbs/<slug:slug>/", views.kb_detail, name="kb-detail"),
    path("kbs/<slug:slug>/upload/", views.kb_upload, name="kb-upload"),
]
