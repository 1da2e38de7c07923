from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from ragstudio.api import api
from ragstudio.monitoring import metrics_view
from ragstudio.openai_api import openai
from ragstudio.views import healthz, readyz
from search import dify, mcp_server

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # The OpenAI-compatible vector-stores API (base_url https://host/v1).
    path("v1/", openai.urls),
    # Dify's External Knowledge API: the endpoint registered in Dify is https://host/dify.
    path("dify/retrieval", dify.retrieval, name="dify-retrieval"),
    # MCP over streamable HTTP (bearer API keys).
    path("mcp", mcp_server.mcp_endpoint, name="mcp"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("knowledge_bases.urls")),
    path("jobs/", include("ingestion.urls")),
]

handler404 = "ragstudio.views.not_found"
