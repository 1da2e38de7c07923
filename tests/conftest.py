from __future__ import annotations

from pathlib import Path

import pytest

from ragstudio.testing.s3 import s3_options

DATA = Path(__file__).resolve().parent / "data"  # fixtures live in the repository


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


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one text line per page (Helvetica), xref offsets exact."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_ids[i] + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


SCALEOUT = "RAGSTUDIO_TEST_SCALEOUT"  # set by `make test-scaleout` (ragstudio.testing.scaleout)


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
    }
    if os.environ.get(SCALEOUT):
        endpoint, bucket = request.getfixturevalue("s3_server")
        uri = f"s3://{bucket}/test-{uuid.uuid4().hex[:12]}"
        overrides.update(
            STORAGE_URI=uri, STORAGE_OPTIONS=s3_options(endpoint), LANCEDB_URI=f"{uri}/lancedb"
        )
    django_settings.RAGSTUDIO = {**original, **overrides}
    request.addfinalizer(lambda: setattr(django_settings, "RAGSTUDIO", original))


def test_database_url() -> str:
    """The URL of the database this test uses (SQLite file or PostgreSQL's test_<name>),
    for the processes a test starts."""
    from urllib.parse import quote

    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = quote(db.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{db['NAME']}"


def subprocess_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a manage.py child process that shares this test's database, data
    directory and secret key (django-q2 signs its tasks with it)."""
    import os

    from django.conf import settings as django_settings

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ragstudio.settings",
        "DATABASE_URL": test_database_url(),
        "RAGSTUDIO_SECRET_KEY": django_settings.SECRET_KEY,
        "RAGSTUDIO_DATA_DIR": str(data_dir),
        "RAGSTUDIO_EMBED_THREADS": "2",
        # The model cache of the test run: workers do not rebuild local-fast per test.
        "RAGSTUDIO_MODEL_DIR": str(django_settings.RAGSTUDIO["MODEL_DIR"]),
        **storage_env(),
        **extra,
    }


def storage_env() -> dict[str, str]:
    """The object store of this test (scale-out run) as the variables a host reads."""
    from django.conf import settings as django_settings

    cfg = django_settings.RAGSTUDIO
    if not cfg["STORAGE_URI"]:
        return {}
    options = cfg["STORAGE_OPTIONS"]
    return {
        "RAGSTUDIO_STORAGE_URI": cfg["STORAGE_URI"],
        "RAGSTUDIO_LANCEDB_URI": cfg["LANCEDB_URI"],
        "AWS_ENDPOINT_URL": options.get("aws_endpoint", ""),
        "AWS_REGION": options.get("aws_region", ""),
        "AWS_ACCESS_KEY_ID": options.get("aws_access_key_id", ""),
        "AWS_SECRET_ACCESS_KEY": options.get("aws_secret_access_key", ""),
        "AWS_ALLOW_HTTP": options.get("allow_http", "false"),
    }


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
