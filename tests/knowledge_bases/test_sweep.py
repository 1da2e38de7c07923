"""Files a crash leaves behind are swept (issue 25, case 8): upload temp files, spooled
request bodies and stored files no row names, once past a grace period."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from knowledge_bases.generations import generations_gc_all, upload_local_path
from tests.factories import make_kb, text, upload

pytestmark = pytest.mark.django_db


def _aged(path: Path, body: bytes = b"x", hours: float = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    old = time.time() - hours * 3600
    os.utime(path, (old, old))
    return path


def test_leftovers_of_crashes_are_swept_after_the_grace_period(alice, tmp_path, settings) -> None:
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    kb = make_kb(alice, "notes")
    document = upload(kb, [("a.txt", text(10, "alpha"))]).accepted[0]
    kept = upload_local_path(document.storage_path)
    old = time.time() - 5 * 3600
    os.utime(kept, (old, old))  # an old file a version names: kept
    root = kept.parents[2]  # the uploads directory
    orphan = _aged(root / f"kb{kb.pk}" / "ab" / ("ab" + "0" * 62))
    temp = _aged(root / f"kb{kb.pk}" / ".upload-x1y2z3")
    api_orphan = _aged(root / "files" / "file-abc")
    spooled = _aged(tmp_path / "spool" / "tmpabc.upload")
    young = _aged(root / f"kb{kb.pk}" / "cd" / ("cd" + "1" * 62), hours=0.1)

    swept = generations_gc_all()["files_left_by_crashes"]

    assert swept == {"temp": 2, "orphans": 2}
    assert kept.exists() and young.exists()  # named by a row / maybe an upload in progress
    assert not orphan.exists() and not temp.exists()
    assert not api_orphan.exists() and not spooled.exists()
