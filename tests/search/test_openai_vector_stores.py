"""The OpenAI-compatible vector-stores API (issue 26, item 1), driven with the official
`openai` SDK against a live server: the whole store lifecycle, filters, errors, scoped
keys."""

from __future__ import annotations

import openai
import pytest
from django.test import Client

from ingestion.jobs import run_job_and_queue
from ingestion.models import IngestionJob
from knowledge_bases.models import ApiToken, KnowledgeBase
from tests.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

FILES = {
    "tides.txt": b"Spring tides happen near the new and full moon; neap tides at the quarters.",
    "volcano.txt": b"Volcanoes vent heat and gas from the mantle through the crust.",
    "currents.txt": b"Ocean currents carry heat from the tropics toward the poles.",
}


def run_queued_jobs() -> None:
    """What the worker would do: run each queued job now."""
    for job in IngestionJob.objects.filter(status="queued").order_by("pk"):
        run_job_and_queue(job.pk)


def sdk(live_server, key: str) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=key, max_retries=0)


def test_the_store_lifecycle_with_the_openai_sdk(live_server) -> None:  # type: ignore[no-untyped-def]
    alice = make_user("alice")
    _row, key = ApiToken.issue(user=alice, name="sdk")
    client = sdk(live_server, key)
    store = client.vector_stores.create(
        name="Earth notes",
        metadata={"team": "geo"},
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 20},
        },
    )
    assert store.id.startswith("vs_") and store.status == "completed"
    assert store.metadata == {"team": "geo"} and store.file_counts.total == 0
    kb = KnowledgeBase.objects.get(pk=int(store.id[3:]))
    assert (kb.name, kb.chunk_size, kb.chunk_overlap) == ("Earth notes", 200, 20)

    uploaded = {
        name: client.files.create(file=(name, data), purpose="assistants")
        for name, data in FILES.items()
    }
    assert all(f.id.startswith("file-") and f.bytes == len(FILES[n]) for n, f in uploaded.items())
    assert client.files.content(uploaded["tides.txt"].id).read() == FILES["tides.txt"]
    attributes = {
        "tides.txt": {"topic": "ocean", "year": 2021},
        "volcano.txt": {"topic": "geology", "year": 2023},
        "currents.txt": {"topic": "ocean", "year": 2019},
    }
    batch = client.vector_stores.file_batches.create(
        vector_store_id=store.id,
        files=[{"file_id": f.id, "attributes": attributes[n]} for n, f in uploaded.items()],
    )
    assert batch.status == "in_progress" and batch.file_counts.in_progress == 3
    run_queued_jobs()
    batch = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    assert batch.status == "completed" and batch.file_counts.completed == 3
    listed = client.vector_stores.files.list(vector_store_id=store.id, filter="completed")
    assert {f.id for f in listed.data} == {f.id for f in uploaded.values()}
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 3

    # Search: hybrid by default; a compound filter over the attributes.
    results = client.vector_stores.search(
        vector_store_id=store.id,
        query="what carries heat",
        filters={
            "type": "and",
            "filters": [
                {"type": "eq", "key": "topic", "value": "ocean"},
                {"type": "lt", "key": "year", "value": 2020},
            ],
        },
    )
    assert [r.filename for r in results.data] == ["currents.txt"]
    assert results.data[0].attributes == {"topic": "ocean", "year": 2019}
    assert 0 < results.data[0].score < 1 and "Ocean currents" in results.data[0].content[0].text
    keyword = client.vector_stores.search(
        vector_store_id=store.id, query="volcanoes mantle", extra_body={"search_mode": "keyword"}
    )
    assert keyword.data[0].filename == "volcano.txt"

    # Attributes change what filters find, with no re-indexing.
    tides = uploaded["tides.txt"].id
    updated = client.vector_stores.files.update(
        tides, vector_store_id=store.id, attributes={"topic": "astronomy", "year": 2021}
    )
    assert updated.attributes == {"topic": "astronomy", "year": 2021}
    astro = client.vector_stores.search(
        vector_store_id=store.id,
        query="moon",
        filters={"type": "eq", "key": "topic", "value": "astronomy"},
    )
    assert [r.file_id for r in astro.data] == [tides]
    content = client.vector_stores.files.content(tides, vector_store_id=store.id)
    assert "Spring tides" in content.data[0].text
    # The attributes are metadata to Dify's conditions too.
    dify = Client(headers={"Authorization": f"Bearer {key}"}).post(
        "/dify/retrieval",
        {
            "knowledge_id": kb.slug,
            "query": "moon tides heat",
            "retrieval_setting": {"top_k": 5, "score_threshold": 0},
            "metadata_condition": {
                "conditions": [{"name": "topic", "comparison_operator": "is", "value": "astronomy"}]
            },
        },
        content_type="application/json",
    )
    assert [r["metadata"]["filename"] for r in dify.json()["records"]] == ["tides.txt"]

    # A different chunking later is refused, pointing at rebuilds.
    with pytest.raises(openai.BadRequestError, match="rebuild"):
        client.vector_stores.files.create(
            vector_store_id=store.id,
            file_id=tides,
            chunking_strategy={
                "type": "static",
                "static": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 0},
            },
        )

    # Delete a file from the store, then the store.
    gone = client.vector_stores.files.delete(tides, vector_store_id=store.id)
    assert gone.deleted
    assert {f.id for f in client.vector_stores.files.list(vector_store_id=store.id).data} == {
        uploaded["volcano.txt"].id,
        uploaded["currents.txt"].id,
    }
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError) as missing:
        client.vector_stores.retrieve(store.id)
    assert missing.value.body["code"] == "not_found"  # type: ignore[index]
    assert client.files.delete(tides).deleted


def test_scoped_keys_and_errors_as_openai_returns_them(live_server) -> None:  # type: ignore[no-untyped-def]
    alice = make_user("alice")
    _row, writer = ApiToken.issue(user=alice, name="w")
    client = sdk(live_server, writer)
    a = client.vector_stores.create(name="A")
    b = client.vector_stores.create(name="B")
    kb_a = KnowledgeBase.objects.get(pk=int(a.id[3:]))
    _row, reader = ApiToken.issue(user=alice, name="r", scope="read", knowledge_bases=[kb_a])
    read_only = sdk(live_server, reader)
    assert [s.id for s in read_only.vector_stores.list().data] == [a.id]
    with pytest.raises(openai.NotFoundError):
        read_only.vector_stores.retrieve(b.id)  # a key limited to A: B does not exist
    with pytest.raises(openai.PermissionDeniedError, match="read-only"):
        read_only.files.create(file=("x.txt", b"some text"), purpose="assistants")
    assert read_only.vector_stores.search(vector_store_id=a.id, query="anything").data == []
    with pytest.raises(openai.AuthenticationError):
        sdk(live_server, "rs_nope").vector_stores.list()
    with pytest.raises(openai.BadRequestError) as bad:
        client.vector_stores.search(vector_store_id=a.id, query="x", max_num_results=500)
    assert bad.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="filters"):
        client.vector_stores.search(
            vector_store_id=a.id, query="x", filters={"type": "like", "key": "k", "value": 1}
        )
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.vector_stores.create(name="C", metadata={"k": 1})  # metadata values are strings
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.create(vector_store_id=a.id, file_id="file-missing")
