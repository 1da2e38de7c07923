from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model

from ingestion.services import IncomingFile, UploadResult, documents_upload
from knowledge_bases.models import KnowledgeBase
from knowledge_bases.services import knowledge_base_create


def make_user(username: str = "alice", **extra: Any):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create_user(
        username=username, password="pw-" + username, **extra
    )


def make_kb(owner: Any = None, slug: str = "kb", **kwargs: Any) -> KnowledgeBase:
    kwargs.setdefault("chunk_size", 64)
    kwargs.setdefault("chunk_overlap", 8)
    return knowledge_base_create(slug=slug, name=slug.title(), owner=owner, **kwargs)


def text(n_sentences: int, topic: str = "science") -> bytes:
    return " ".join(
        f"Sentence {i} about {topic} explains detail number {i * 3}." for i in range(n_sentences)
    ).encode()


def upload(kb: KnowledgeBase, files: Iterable[tuple[str, bytes]], **kwargs: Any) -> UploadResult:
    kwargs.setdefault("enqueue", False)
    return documents_upload(
        kb=kb, files=[IncomingFile(name=n, chunks=[b]) for n, b in files], **kwargs
    )
