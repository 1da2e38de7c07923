"""Liveness and readiness: /readyz answers 503 until the process has loaded its models."""

from __future__ import annotations

import pytest

from ragstudio import readiness
from tests.cluster import wait_for
from tests.factories import make_kb, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fresh(monkeypatch, settings):  # type: ignore[no-untyped-def]
    """A process that has not preloaded yet, with preloading on."""
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "PRELOAD_MODELS": True, "EMBEDDER": "local"}
    state = readiness.Readiness()
    monkeypatch.setattr(readiness, "_state", state)
    return state


def test_healthz_answers_without_login(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_is_503_until_the_models_in_use_are_loaded(client, fresh) -> None:
    kb = make_kb(make_user(), embedder="local-fast")
    from ragstudio.testing.generations import make_generation

    make_generation(kb, "active", rows=2)
    first = client.get("/readyz")
    assert first.status_code == 503 and first.json()["checks"]["models"] == "loading"
    assert first.json()["checks"]["database"] == "ok"
    wait_for(lambda: client.get("/readyz").status_code == 200, 120, "the models to load")
    body = client.get("/readyz").json()
    # The default model and the one the knowledge base serves with.
    assert body["ready"] is True and body["models"] == ["local", "local-fast"]
    assert body["preload_seconds"] >= 0


def test_preload_is_once_per_process_and_skips_remote_models(fresh, settings) -> None:
    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "EMBEDDER": "openai:text-embedding-3-small"}
    state = readiness.preload("worker")
    assert state.done.is_set() and state.models == [] and state.error == ""
    assert readiness.preload("worker") is state


def test_what_preload_loaded_is_left_out_of_later_garbage_collections(fresh, settings) -> None:
    import gc

    settings.RAGSTUDIO = {**settings.RAGSTUDIO, "EMBEDDER": "openai:text-embedding-3-small"}
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        readiness.preload("web")
        # The process's long-lived objects (Django, libraries, models) are frozen.
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
