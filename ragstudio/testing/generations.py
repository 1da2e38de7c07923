"""Synthetic generations on real stores, for lifecycle tests and bench/promote.py.

Each row's id is "g<number>c<i>", so a search result can tell which generation it came
from; texts mix a few biology words so BM25 has something to match."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from django.utils import timezone

from knowledge_bases.generations import (
    generation_check,
    generation_create,
    generation_store,
    transition,
)
from knowledge_bases.models import Document, Generation, KnowledgeBase
from ragstudio.core.types import Chunk, EmbeddedChunk, content_hash

S = Generation.Status
WORDS = [
    *("protein", "membrane", "signal", "receptor", "kinase"),
    *("pathway", "neuron", "synapse", "enzyme", "catalyst"),
]


def synthetic_documents(kb: KnowledgeBase, n: int) -> list[int]:
    """Ids of n document rows the synthetic chunks belong to (shared by every generation
    of the KB: a swap keeps only chunks whose document exists)."""
    ids = []
    for i in range(n):
        doc, _ = Document.objects.get_or_create(
            knowledge_base=kb,
            original_filename=f"synthetic-{i}.txt",
            defaults={
                "title": f"Synthetic {i}",
                "sha256": f"{i:064x}",
                "size": 0,
                "content_type": "text/plain",
                "storage_path": f"synthetic/{i}",
                "status": Document.Status.INDEXED,
                "chunk_count": 1,
            },
        )
        ids.append(doc.pk)
    return ids


def make_rows(generation: Generation, n: int) -> list[EmbeddedChunk]:
    rng = np.random.default_rng(generation.number)
    rows = []
    document_ids = synthetic_documents(generation.knowledge_base, n)
    for i in range(n):
        text = " ".join(rng.choice(WORDS, 12)) + f" marker{generation.number}x{i}"
        vec = rng.normal(size=generation.dimensions).astype(np.float32)
        chunk = Chunk(
            id=f"g{generation.number}c{i}",
            document_id=document_ids[i],
            ordinal=0,
            text=text,
            content_hash=content_hash(text),
            token_count=13,
        )
        rows.append(EmbeddedChunk(chunk, vec / np.linalg.norm(vec), new=True))
    return rows


def make_generation(
    kb: KnowledgeBase,
    status: str,
    *,
    rows: int = 6,
    archived_ago: timedelta | None = None,
    checked: bool = True,
) -> Generation:
    """A generation of ``rows`` synthetic chunks brought to ``status`` through the state
    machine (an active one is the KB's active generation; the one it replaces, if any, is
    archived). Generations that served go on the rollback stack as promotes would put
    them: an archived one as replaced by what serves, and what served before an active
    one."""
    generation = generation_create(kb=kb)
    if rows:
        generation_store(generation).write(make_rows(generation, rows))
    # The provider of the generation's embedder, as a real build would record it.
    Generation.objects.filter(pk=generation.pk).update(
        embedder_fingerprint=f"{generation.embedder.partition(':')[0]}:test", chunk_count=rows
    )
    generation.refresh_from_db()
    current = KnowledgeBase.objects.get(pk=kb.pk).active_generation
    if status in (S.ACTIVE, S.ARCHIVED):
        # Served once: the KB's active generation (if any) steps aside meanwhile, and is
        # back in place after an archived one.
        if current is not None:
            transition(current, S.ARCHIVED)
        transition(generation, S.ACTIVE)
        stack = KnowledgeBase.objects.get(pk=kb.pk).rollback_stack
        replaced = generation if status == S.ARCHIVED else current
        if replaced is not None:
            KnowledgeBase.objects.filter(pk=kb.pk).update(rollback_stack=[*stack, replaced.pk])
        if status == S.ACTIVE:
            KnowledgeBase.objects.filter(pk=kb.pk).update(active_generation=generation)
        else:
            transition(generation, S.ARCHIVED)
            if current is not None:
                transition(current, S.ACTIVE)
    elif status == S.COLLECTED:
        transition(generation, S.FAILED)
        transition(generation, S.COLLECTED)
    elif status != S.BUILDING:
        transition(generation, status)
    if status == S.ARCHIVED:
        archived_at = timezone.now() - (archived_ago or timedelta(days=2))
        Generation.objects.filter(pk=generation.pk).update(archived_at=archived_at)
        generation.archived_at = archived_at
    elif checked and status == S.READY:
        generation_check(generation=generation)
    return generation
