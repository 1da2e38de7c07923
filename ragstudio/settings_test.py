"""Test settings: every run gets its own data directory and, on the embedded default, a
file-based SQLite database, so real worker processes started by integration tests see the
same data as the test. With DATABASE_URL (PostgreSQL) the test database is Django's
``test_<name>`` on that server, shared with those processes the same way."""

import os
import tempfile

os.environ.setdefault("RAGSTUDIO_DATA_DIR", tempfile.mkdtemp(prefix="ragstudio-test-"))
os.environ.setdefault("RAGSTUDIO_EMBED_THREADS", "2")
# Worker clusters of tests that embed nothing need not load a model (tests that check the
# preload turn it on).
os.environ.setdefault("RAGSTUDIO_PRELOAD_MODELS", "0")
# Tests search and upload in tight loops as one user; the rate limits' own tests set them.
os.environ.setdefault("RAGSTUDIO_USER_SEARCHES_PER_MINUTE", "0")
os.environ.setdefault("RAGSTUDIO_USER_UPLOADS_PER_MINUTE", "0")
# A queue of this test process's own: test runs sharing a Redis server never take each
# other's tasks, nor do pytest-xdist's workers, which inherit the environment of the
# process that started them (so the name is set, not defaulted).
os.environ["RAGSTUDIO_QUEUE_NAME"] = f"test-{os.getpid()}"

from ragstudio.settings import *  # noqa: F403
from ragstudio.settings import DATA_DIR, DATABASES

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
