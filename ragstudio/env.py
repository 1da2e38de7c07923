"""Typed readers for RAGSTUDIO_* environment variables.

Each raises ImproperlyConfigured naming the variable when its value cannot be used, so a
typo in deployment fails at start-up instead of surfacing later as odd behaviour.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict, cast

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    source = os.environ if environ is None else environ
    value = source.get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str, *, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false/1/0), got {value!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None or value == "":
        result = default
    else:
        try:
            result = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {result}")
    return result


def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    value = _raw(name, environ)
    if value is None or value == "":
        result = default
    else:
        try:
            result = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {result}")
    return result


def env_list(
    name: str, default: list[str], *, environ: Mapping[str, str] | None = None
) -> list[str]:
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path, *, environ: Mapping[str, str] | None = None) -> Path:
    value = _raw(name, environ)
    if value is None or value == "":
        return default.resolve()
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"{name} must be a directory, {str(path)!r} is a file")
    return path.resolve()


def secret_key_file(path: Path) -> str:
    """The key stored at ``path``, created on first use: mode 0600 from the first byte
    (never written with the umask and chmod-ed later), and published with a hard link,
    which fails when the file exists, so processes starting together on a fresh data
    directory all end up with the one key that won."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(50))
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


class RagStudioConfig(TypedDict):
    """The shape of settings.RAGSTUDIO."""

    UPLOAD_DIR: Path
    LANCEDB_URI: str
    BM25_DIR: Path
    TRANSFER_DIR: Path
    # s3://bucket/prefix shared by every host ("" on one machine), and the options that
    # reach it (LanceDB's names: aws_endpoint, aws_region, aws_access_key_id, ...).
    STORAGE_URI: str
    STORAGE_OPTIONS: dict[str, str]
    MODEL_DIR: Path
    EMBEDDER: str
    PRELOAD_MODELS: bool
    EMBEDDERS_FOR_USERS: list[str]
    QUOTA_KNOWLEDGE_BASES: int
    IMPORT_MAX_BYTES: int
    QUOTA_BYTES: int
    EMBED_THREADS: int
    QUERY_EMBED_THREADS: int
    OPENAI_BASE_URL: str
    OPENAI_API_KEY: str
    OPENAI_DIMENSIONS: int
    OPENAI_TIMEOUT: float
    OPENAI_MAX_RETRIES: int
    OPENAI_MAX_CONCURRENCY: int
    OPENAI_MAX_BATCH_ITEMS: int
    OPENAI_REQUESTS_PER_MINUTE: int
    OPENAI_TOKENS_PER_MINUTE: int
    STORE_BATCH_SIZE: int
    EMBED_BATCH_SIZE: int
    CHUNK_SIZE: int
    CHUNK_OVERLAP: int
    HEARTBEAT_STALE_SECONDS: int
    JOB_MAX_ATTEMPTS: int
    GC_MIN_AGE_SECONDS: int
    VERSION_GRACE_SECONDS: int
    SOURCE_FOLDER_ROOTS: list[Path]
    FETCH_ALLOW: list[str]
    FETCH_TIMEOUT_SECONDS: float
    SOURCE_MAX_ITEMS: int
    ANN_MIN_ROWS: int
    ANN_NPROBES: int
    ANN_REFINE_FACTOR: int
    ANN_EF: int
    QUERY_CACHE_SIZE: int
    PARSE_TIMEOUT_SECONDS: float
    PARSE_MEMORY_MB: int
    MAX_DOCUMENT_CHARS: int
    USER_QUEUED_JOBS: int
    USER_REBUILDS: int
    USER_EVALUATIONS: int
    USER_LIMIT_RETRY_SECONDS: int
    USER_SEARCHES_PER_MINUTE: int
    USER_UPLOADS_PER_MINUTE: int
    JOB_PARSE_BUDGET_SECONDS: float
    JOB_WINDOW_SECONDS: float
    PARSE_AFTER_BUDGET_SECONDS: float


def rag_settings() -> RagStudioConfig:
    """settings.RAGSTUDIO, typed (read on each call, so overrides in tests apply)."""
    from django.conf import settings

    return cast(RagStudioConfig, settings.RAGSTUDIO)
