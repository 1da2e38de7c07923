"""Django in a throwaway data directory, for benchmarks that go through the services."""

from __future__ import annotations

import itertools
import json
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


def scifact_files(corpus: Path, docs: int, per_file: int = 50) -> list[tuple[str, bytes]]:
    """The first ``docs`` SciFact abstracts (title and text) as JSON Lines files of
    ``per_file`` records: (file name, body)."""
    with open(corpus) as fh:
        records = [json.loads(line) for line in itertools.islice(fh, docs)]
    return [
        (
            f"scifact-{i // per_file}.jsonl",
            "\n".join(
                json.dumps({"id": r["_id"], "title": r["title"], "text": r["text"]})
                for r in records[i : i + per_file]
            ).encode(),
        )
        for i in range(0, len(records), per_file)
    ]
