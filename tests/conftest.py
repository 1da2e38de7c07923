from __future__ import annotations

from pathlib import Path

import pytest

from ragstudio.testing.s3 import s3_options
from tests.helpers import SCALEOUT


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def embedder(model_root: Path):  # type: ignore[no-untyped-def]
    """The real bundled model, loaded once per test session."""
    from ingestion.embedders.local import LocalEmbedder

    return LocalEmbedder.bundled(model_root, threads=2)


@pytest.fixture(scope="session")
def fast_embedder(model_root: Path):  # type: ignore[no-untyped-def]
    """The local-fast build of the bundled model, built once per test session."""
    from ingestion.embedders.local import FastLocalEmbedder

    return FastLocalEmbedder.build(model_root, threads=2)


@pytest.fixture(autouse=True)
def _isolated_storage(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Each test gets its own upload, LanceDB and tantivy directories, laid out as a data
    directory (worker subprocesses get RAGSTUDIO_DATA_DIR=tmp_path/data and agree). In the
    scale-out run, each test's tables, indexes and uploads live under a prefix of its own
    in the object store (moto's S3 server), the data directory being only a cache."""
    import os
    import uuid

    from django.conf import settings as django_settings

    original = django_settings.RAGSTUDIO
    overrides: dict = {
        "UPLOAD_DIR": tmp_path / "data" / "uploads",
        "LANCEDB_URI": str(tmp_path / "data" / "lancedb"),
        "BM25_DIR": tmp_path / "data" / "bm25",
        "TRANSFER_DIR": tmp_path / "data" / "transfers",
    }
    if os.environ.get(SCALEOUT):
        endpoint, bucket = request.getfixturevalue("s3_server")
        uri = f"s3://{bucket}/test-{uuid.uuid4().hex[:12]}"
        overrides.update(
            STORAGE_URI=uri, STORAGE_OPTIONS=s3_options(endpoint), LANCEDB_URI=f"{uri}/lancedb"
        )
    django_settings.RAGSTUDIO = {**original, **overrides}
    request.addfinalizer(lambda: setattr(django_settings, "RAGSTUDIO", original))


@pytest.fixture
def alice():  # type: ignore[no-untyped-def]
    from tests.factories import make_user

    return make_user("alice")


@pytest.fixture
def login():  # type: ignore[no-untyped-def]
    """login(user) -> a test Client with that user's browser session."""
    from django.test import Client

    def build(user: object) -> Client:
        client = Client()
        client.force_login(user)  # type: ignore[arg-type]
        return client

    return build


@pytest.fixture
def client_for():  # type: ignore[no-untyped-def]
    """client_for(user) -> a test Client that sends a new API token of that user."""
    from django.test import Client

    from knowledge_bases.models import ApiToken

    def build(user: object) -> Client:
        _row, token = ApiToken.issue(user=user)
        return Client(headers={"Authorization": f"Bearer {token}"})

    return build


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """moto's S3 server on a free loopback port (a dev dependency: no network, no AWS),
    with a bucket; yields (endpoint URL, bucket)."""
    from ragstudio.testing.s3 import start_s3_server
    from tests.cluster import free_port

    port = free_port()
    with open(tmp_path_factory.mktemp("moto") / "moto.log", "w") as log:
        proc = start_s3_server(port, "ragstudio", log)
        try:
            yield f"http://127.0.0.1:{port}", "ragstudio"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL (DATABASE_URL), every database test runs with real transactions: jobs
    report progress from threads of their own, whose connections cannot see a test's
    uncommitted rows there (SQLite's shared file can)."""
    import os

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres", "postgresql")):
        return
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker is not None and not marker.kwargs.get("transaction"):
            item.add_marker(
                pytest.mark.django_db(
                    transaction=True,
                    **{k: v for k, v in marker.kwargs.items() if k != "transaction"},
                ),
                append=False,
            )
