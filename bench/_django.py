"""Django in a throwaway data directory, for benchmarks that go through the services."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(prefix: str) -> Path:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["RAGSTUDIO_DATA_DIR"] = str(work / "data")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragstudio.settings")
    os.environ.setdefault("RAGSTUDIO_LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return work
