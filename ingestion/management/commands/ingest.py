"""manage.py ingest --kb SLUG [--create] [--mode replace|new] PATH... [--store-batch-size N]
[--embed-batch-size N]

Runs the same pipeline as the workers, in the foreground, with a live progress line."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ingestion.foreground import run_in_foreground
from ingestion.models import IngestionJob
from ingestion.services import IncomingFile, UploadMode, documents_upload
from knowledge_bases.models import Document
from knowledge_bases.selectors import knowledge_base_for_operator
from knowledge_bases.services import knowledge_base_create
from ragstudio.cli import bounded_int
from ragstudio.core.bounds import EMBED_BATCH_SIZE, STORE_BATCH_SIZE
from ragstudio.core.errors import NotFound, RagStudioError

READ_PIECE = 1024 * 1024


def collect_files(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"no such file or directory: {raw}")
    if not files:
        raise CommandError("no files found in the given paths")
    return files


def _read_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while piece := fh.read(READ_PIECE):
            yield piece


class Command(BaseCommand):
    help = "Ingest files or directories into a knowledge base, in the foreground."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kb", required=True, help="knowledge base: slug, or owner~slug")
        parser.add_argument("--create", action="store_true", help="create the KB if missing")
        parser.add_argument("paths", nargs="+", help="files or directories (recursive)")
        parser.add_argument("--store-batch-size", type=bounded_int(STORE_BATCH_SIZE), default=None)
        parser.add_argument("--embed-batch-size", type=bounded_int(EMBED_BATCH_SIZE), default=None)
        parser.add_argument(
            "--mode",
            choices=[m.value for m in UploadMode],
            default=UploadMode.REPLACE.value,
            help="replace (default): a file named like a document is a new version of it; "
            "new: every file a separate document",
        )
        parser.add_argument(
            "--password-file",
            type=Path,
            default=None,
            help="a file whose first line opens the encrypted PDFs and Office files "
            "(they are stored decrypted; a file, so the password shows in no process list)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        slug = options["kb"]
        files = collect_files(options["paths"])
        password = ""
        if options["password_file"] is not None:
            try:
                lines = options["password_file"].read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read the password file: {exc}") from None
            password = lines[0] if lines else ""
        try:
            try:
                kb = knowledge_base_for_operator(slug)
            except NotFound:
                if not options["create"]:
                    raise CommandError(
                        f"no knowledge base {slug!r}: pass --create to make one"
                    ) from None
                kb = knowledge_base_create(slug=slug, name=slug.replace("-", " ").title())
                self.stdout.write(f"created knowledge base {slug!r}")
            result = documents_upload(
                kb=kb,
                files=[IncomingFile(name=f.name, chunks=_read_pieces(f)) for f in files],
                enqueue=False,
                store_batch_size=options["store_batch_size"],
                embed_batch_size=options["embed_batch_size"],
                mode=options["mode"],
                password=password,
            )
        except RagStudioError as exc:
            raise CommandError(exc.message) from None

        for document in result.versions:
            self.stdout.write(f"new version: {document.original_filename} (v{document.version})")
        for name, existing in result.unchanged:
            self.stdout.write(f"unchanged: {name} (the same as v{existing.version})")
        for name, existing in result.duplicates:
            self.stdout.write(f"duplicate: {name} (same content as {existing.original_filename})")
        failures = list(result.rejected)
        job = result.job
        if job is not None:
            job = run_in_foreground(job, stdout=self.stdout, stderr=self.stderr)
            failed_docs = job.documents.filter(status=Document.Status.FAILED)
            failures += [(d.original_filename, d.error_message) for d in failed_docs]
        for name, reason in failures:
            self.stdout.write(f"failed: {name}: {reason}")
        documents = len(files)
        elapsed = time.monotonic() - started
        chunks = job.total if job else 0
        embedded = job.ready if job else 0
        persisted = job.persisted if job else 0
        self.stdout.write(
            f"done: {documents} documents, {chunks} chunks, {embedded} embedded, "
            f"{persisted} persisted, {len(failures)} failed in {elapsed:.1f} s"
        )
        if job is not None and job.status == IngestionJob.Status.FAILED:
            raise CommandError(f"job {job.pk} failed: {job.error_message}")
        if job is not None and job.status == IngestionJob.Status.CANCELLED:
            raise CommandError(f"job {job.pk} was cancelled", returncode=130)
