"""`make test-scaleout`: the integration suite again (real worker clusters, web servers,
browsers, the multi-host test), on the scaled-out stack: PostgreSQL (DATABASE_URL),
Redis as the django-q2 broker (RAGSTUDIO_REDIS_URL), and every test's LanceDB tables,
BM25 indexes and uploads in an S3 API (moto's server, started by the tests on a free
port). Arguments go to pytest instead of ``-m integration`` (``--all``: the whole suite,
~15 min here); ``make test-scaleout`` runs the integration tests two at a time (each
pytest-xdist process has its own test database and task queue).

The servers default to 127.0.0.1:5432 (trust auth) and 127.0.0.1:6379
(RAGSTUDIO_TEST_DATABASE_URL and RAGSTUDIO_TEST_REDIS_URL override them). When they are
unreachable the run is skipped, except under CI=true, where it fails."""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

DATABASE = "postgres://postgres@127.0.0.1:5432/ragstudio"
REDIS = "redis://127.0.0.1:6379/15"


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 3
        ):
            return True
    except OSError:
        return False


def main() -> int:
    database = os.environ.get("RAGSTUDIO_TEST_DATABASE_URL", DATABASE)
    redis = os.environ.get("RAGSTUDIO_TEST_REDIS_URL", REDIS)
    missing = [
        name
        for name, url, port in (("PostgreSQL", database, 5432), ("Redis", redis, 6379))
        if not reachable(url, port)
    ]
    if missing:
        message = f"{' and '.join(missing)} unreachable (see docs/deploy.md to start them)"
        if os.environ.get("CI"):
            print(f"error: scale-out tests: {message}", file=sys.stderr)
            return 1
        print(f"scale-out tests skipped: {message}")
        return 0
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "RAGSTUDIO_REDIS_URL": redis,
        "RAGSTUDIO_TEST_SCALEOUT": "1",
    }
    print(f"scale-out tests: {database}, {redis}, an S3 API on loopback", flush=True)
    args = sys.argv[1:] or ["-m", "integration"]
    if args == ["--all"]:
        args = []
    os.execvpe(sys.executable, [sys.executable, "-m", "pytest", *args], env)
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
