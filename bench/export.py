"""Moving a knowledge base to another installation: export + import against building it
again from the same files there.

    .venv/bin/python bench/export.py [--docs 5183] [--chunk-size 200]

SciFact abstracts (title + text), one JSON Lines file per 50 documents, indexed through
the real job into a KB on this machine's default model; then ``kb export`` of it, and
``manage.py kb import`` of the archive into a second, new installation (its own data
directory and SQLite database, in a child process, as an operator would run it). Prints
each step's time, the archive's size and what each step embedded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._django import ROOT, corpus_args, scifact_kb, setup


def directory_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> None:
    args = corpus_args(__doc__ or "", 5183)
    work = setup("ragstudio-bench-export-")
    try:
        from django.conf import settings

        from knowledge_bases.generations import generation_store
        from knowledge_bases.services.transfer import kb_export

        kb, _user, built, build_s = scifact_kb(args, "scifact")
        generation = kb.active_generation
        assert generation is not None
        bm25 = Path(generation_store(generation).bm25.path)
        bm25_mib, passages_mib = directory_mib(bm25), directory_mib(bm25 / "passages")

        archive = work / "scifact.ragkb"
        started = time.perf_counter()
        summary = kb_export(kb, archive)
        export_s = time.perf_counter() - started

        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAGSTUDIO_")},
            "DJANGO_SETTINGS_MODULE": "ragstudio.settings",
            "RAGSTUDIO_DATA_DIR": str(work / "elsewhere"),
            "RAGSTUDIO_MODEL_DIR": str(settings.RAGSTUDIO["MODEL_DIR"]),
            "RAGSTUDIO_LOG_LEVEL": "WARNING",
        }
        migrated = manage(env, "migrate", "-v", "0")
        assert migrated.returncode == 0, migrated.stderr
        started = time.perf_counter()
        imported = manage(env, "kb", "import", str(archive), "--as", "scifact")
        import_wall_s = time.perf_counter() - started
        assert imported.returncode == 0, imported.stderr
        line = next(x for x in imported.stdout.splitlines() if x.startswith("imported "))
        import_s = float(re.search(r"\(([\d.]+) s\)", line).group(1))  # type: ignore[union-attr]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"\nSciFact, {args.docs} documents -> {built.total} chunks ({args.chunk_size}-token "
        f"chunks), model {kb.embedder}; BM25 index {bm25_mib:.1f} MiB of which passages "
        f"{passages_mib:.1f} MiB"
    )
    print("| step | seconds | chunks embedded | size MiB |")
    print("|---|---|---|---|")
    print(
        f"| build from the files (a new installation's only way before) | {build_s:.1f} | {built.embedded} | |"
    )
    print(f"| kb export (serving generation) | {export_s:.1f} | 0 | {summary.bytes / 2**20:.1f} |")
    print(f"| kb import into a new installation | {import_s:.1f} | 0 | |")
    print(f"| kb import, whole command (Django start included) | {import_wall_s:.1f} | 0 | |")
    total = export_s + import_wall_s
    print(
        f"\nexport + import: {total:.1f} s against {build_s:.1f} s to build again "
        f"({build_s / total:.1f}x faster); {summary.chunks} chunks moved, "
        f"{summary.documents} documents"
    )


if __name__ == "__main__":
    main()
