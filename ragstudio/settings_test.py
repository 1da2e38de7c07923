"""Test settings: every run gets its own data directory and a file-based SQLite database,
so real worker processes started by integration tests see the same data as the test."""

import os
import tempfile

os.environ.setdefault("RAGSTUDIO_DATA_DIR", tempfile.mkdtemp(prefix="ragstudio-test-"))
os.environ.setdefault("RAGSTUDIO_EMBED_THREADS", "2")

from ragstudio.settings import *  # noqa: F403
from ragstudio.settings import DATA_DIR, DATABASES

DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-db.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
