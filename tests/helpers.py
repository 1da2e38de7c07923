"""Helpers the tests share (fixtures live in conftest.py): fixture files, a minimal PDF,
and the environment of the processes a test starts (workers, servers, commands)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from django.conf import settings as django_settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"  # fixtures live in the repository
SCALEOUT = "RAGSTUDIO_TEST_SCALEOUT"  # set by `make test-scaleout` (ragstudio.testing.scaleout)


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


def make_locked_pdf(text: str, password: str) -> bytes:
    """``make_pdf([text])`` encrypted (AES-256) so that only ``password`` opens it."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([text]))))
    writer.encrypt(user_password=password, owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def database_url() -> str:
    """The URL of the database this test uses (SQLite file or PostgreSQL's test_<name>),
    for the processes a test starts."""
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
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ragstudio.settings",
        "DATABASE_URL": database_url(),
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


def fresh_install_env(data_dir: Path) -> dict[str, str]:
    """The environment of a new installation: its own data directory and SQLite database
    (the model cache of the test run, so nothing is built again)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RAGSTUDIO_"))}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "ragstudio.settings",
        "RAGSTUDIO_DATA_DIR": str(data_dir),
        "RAGSTUDIO_MODEL_DIR": str(django_settings.RAGSTUDIO["MODEL_DIR"]),
        "RAGSTUDIO_EMBED_THREADS": "2",
        "RAGSTUDIO_LOG_LEVEL": "WARNING",
    }


def manage(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` in a child process with ``env``."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def scrape_metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as a Prometheus server reads it: each sample by name and labels."""
    from django.test import Client
    from prometheus_client.parser import text_string_to_metric_families

    response = Client().get("/metrics")
    assert response.status_code == 200, response.content[:500]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }
