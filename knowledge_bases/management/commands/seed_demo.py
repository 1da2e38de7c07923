"""Create a demo user and a demo knowledge base from the sample documents shipped in the
repository, and queue their ingestion. Safe to run again: nothing is duplicated."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from ingestion.services import IncomingFile, documents_upload
from knowledge_bases.models import KnowledgeBase
from knowledge_bases.services import knowledge_base_create

SAMPLES = Path(__file__).resolve().parents[2] / "demo_docs"


class Command(BaseCommand):
    help = "Create the demo user and the demo knowledge base (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        credentials = Path(settings.DATA_DIR) / "demo-credentials.txt"
        user = User.objects.filter(username="demo").first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_superuser("demo", "demo@localhost", password)
            credentials.write_text(f"demo {password}\n")
            credentials.chmod(0o600)
        kb = KnowledgeBase.objects.filter(slug="demo", owner=user).first()
        if kb is None:
            kb = knowledge_base_create(
                slug="demo",
                name="Demo",
                owner=user,
                description="Sample documents shipped with RAG Studio.",
            )
        files = sorted(p for p in SAMPLES.iterdir() if p.is_file())
        result = documents_upload(
            kb=kb,
            files=[IncomingFile(name=p.name, chunks=[p.read_bytes()]) for p in files],
            user=user,
        )
        queued = (
            f"queued job {result.job.pk} for {len(result.accepted)} documents"
            if result.job
            else "up to date"
        )
        self.stdout.write(f"demo knowledge base: {queued}")
        if credentials.exists():
            name, password = credentials.read_text().split()
            self.stdout.write(f"log in at http://127.0.0.1:8000/ as {name} / {password}")
