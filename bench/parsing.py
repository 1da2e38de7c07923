"""How well documents are read: every file of ../shared/datasets/real-docs parsed, per
format the files read and refused (with the reasons), token F1 of the extracted text
against the ground truth where there is one, the slowest file and MB/s.

    .venv/bin/python bench/parsing.py                       # RAG Studio's parsers
    .venv/bin/python bench/parsing.py --markitdown PYTHON   # and markitdown, run by PYTHON
                                                            # (a venv with markitdown[all])
    .venv/bin/python bench/parsing.py --ingest              # and all 80 through the API
    .venv/bin/python bench/parsing.py --no-passwords        # encrypted files left locked

Encrypted files are opened with the password their test suite documents (in MANIFEST.tsv's
notes or the file's name), as a user gives it on upload.

Token F1: the words (lower-cased \\w+ runs; each Chinese or Japanese character on its own)
of the extracted text against those of the ground truth, as multisets (Markdown link targets and image placeholders in the ground
truth are markup, not text, and are left out). Each file is parsed in the parsing sandbox, as the worker does.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "datasets" / "real-docs"
# Chinese and Japanese write no spaces between words: each of their characters is a token
# (a run of them would be one "word" a sentence long); other scripts' words are \w+ runs.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")
_LINK_TARGET = re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")
_IMAGE_NOTE = re.compile(r"<!-- image -->")

_MARKITDOWN = """
import sys, json, time
from markitdown import MarkItDown
md = MarkItDown(enable_plugins=False)
for line in sys.stdin:
    path = line.strip()
    started = time.perf_counter()
    try:
        text, error = md.convert(path).text_content, ""
    except Exception as exc:
        text, error = "", f"{type(exc).__name__}: {str(exc)[:120]}"
    print(json.dumps({"text": text, "error": error, "s": time.perf_counter() - started}), flush=True)
"""


def tokens(text: str) -> collections.Counter[str]:
    return collections.Counter(w.lower() for w in _WORD.findall(text))


def f1(predicted: str, truth: str) -> float:
    p, t = tokens(predicted), tokens(truth)
    overlap = sum((p & t).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(p.values()), overlap / sum(t.values())
    return 2 * precision * recall / (precision + recall)


def ground_truth(files: str) -> str | None:
    for name in files.split(","):
        name = name.strip()
        if name.endswith((".gt.md", ".expected.txt", ".elements.txt", ".chunks.txt")):
            if "fullpaper" in name:  # the whole paper, for a one-page PDF: not comparable
                return None
            text = (DATA / name).read_text(encoding="utf-8", errors="replace")
            # Markdown's markup is not text: link targets and image placeholders go.
            text = _LINK_TARGET.sub("]", text)
            return _IMAGE_NOTE.sub(" ", text)
    return None


def manifest() -> list[dict[str, str]]:
    lines = (DATA / "MANIFEST.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]


_PASSWORD_NOTE = re.compile(r'password "([^"]+)"')
_PASSWORD_NAME = re.compile(r"password-(\w+)\.")


def password_of(entry: dict[str, str]) -> str:
    found = _PASSWORD_NOTE.search(entry.get("notes", "")) or _PASSWORD_NAME.search(entry["file"])
    return found.group(1) if found else ""


def ours(paths: list[Path], passwords: list[str]) -> list[tuple[str, str, float]]:
    from ingestion.pipeline.sandbox import ParseSandbox
    from ragstudio.core.types import DocumentError

    out = []
    with ParseSandbox(60, memory_mb=3072) as sandbox:
        for path, password in zip(paths, passwords, strict=True):
            data = path.read_bytes()
            started = time.perf_counter()
            try:
                if password:
                    data = sandbox.decrypt(data, password, max_bytes=1 << 30) or data
                sections = sandbox.parse(data, path.name, max_bytes=None)
                text = "\n\n".join(
                    (f"{s.header}\n{s.text}" if s.header else s.text) for s in sections
                )
                out.append((text, "", time.perf_counter() - started))
            except DocumentError as exc:
                out.append(("", str(exc), time.perf_counter() - started))
    return out


def markitdown(python: str, paths: list[Path]) -> list[tuple[str, str, float]]:
    proc = subprocess.run(
        [python, "-c", _MARKITDOWN],
        input="\n".join(str(p) for p in paths) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [
        (r["text"], r["error"] or ("" if r["text"].strip() else "no text"), r["s"]) for r in rows
    ]


def report(name: str, entries: list[dict[str, str]], results: list[tuple[str, str, float]]) -> None:
    by_format: dict[str, list[tuple[dict[str, str], tuple[str, str, float]]]] = (
        collections.defaultdict(list)
    )
    for entry, result in zip(entries, results, strict=True):
        by_format[entry["format"]].append((entry, result))
    print(f"\n### {name}\n")
    print(
        "| format | files | read | refused | F1 (files with ground truth) | min F1 | slowest s | MB/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    totals = collections.Counter()
    scores: list[float] = []
    for fmt in sorted(by_format):
        rows = by_format[fmt]
        read = [r for r in rows if not r[1][1]]
        f1s = []
        for entry, (text, error, _s) in rows:
            truth = (
                ground_truth(entry["groundtruth_files"])
                if entry["has_groundtruth"] == "yes"
                else None
            )
            if truth is not None:
                f1s.append(0.0 if error else f1(text, truth))
        seconds = sum(r[1][2] for r in rows)
        size = sum(int(r[0]["bytes"]) for r in rows) / 1e6
        mean = f"{sum(f1s) / len(f1s):.3f} ({len(f1s)})" if f1s else "-"
        print(
            f"| {fmt} | {len(rows)} | {len(read)} | {len(rows) - len(read)} | {mean} | "
            f"{min(f1s):.3f} | {max(r[1][2] for r in rows):.2f} | {size / max(seconds, 1e-9):.2f} |"
            if f1s
            else f"| {fmt} | {len(rows)} | {len(read)} | {len(rows) - len(read)} | - | - | "
            f"{max(r[1][2] for r in rows):.2f} | {size / max(seconds, 1e-9):.2f} |"
        )
        totals.update(files=len(rows), read=len(read))
        scores.extend(f1s)
    print(
        f"| **all** | {totals['files']} | {totals['read']} | {totals['files'] - totals['read']} | "
        f"{sum(scores) / len(scores):.3f} ({len(scores)}) | {min(scores):.3f} | | |"
    )
    print("\nRefused or failed:\n")
    for entry, (_text, error, _s) in zip(entries, results, strict=True):
        if error:
            print(f"- `{entry['file']}`: {error[:160]}")
    print("\nLowest F1:\n")
    worst = []
    for entry, (text, error, _s) in zip(entries, results, strict=True):
        truth = (
            ground_truth(entry["groundtruth_files"]) if entry["has_groundtruth"] == "yes" else None
        )
        if truth is not None and not error:
            worst.append((f1(text, truth), entry["file"]))
    for score, file in sorted(worst)[:8]:
        print(f"- `{file}`: {score:.3f}")


def ingest(paths: list[Path], passwords: list[str]) -> None:
    """Every file uploaded in one API request into a new KB (each encrypted one in a request
    of its own, with its password), the jobs run as the worker runs them: the requests'
    answers, each document's verdict, the jobs' counters."""
    from bench._django import setup

    setup("ragstudio-parsing-")
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from ingestion.jobs import run_job_and_queue
    from ingestion.models import IngestionJob
    from knowledge_bases.models import ApiToken, Document
    from knowledge_bases.services import knowledge_base_create

    user = get_user_model().objects.create_user("bench", password="x")
    knowledge_base_create(slug="real", name="Real documents", owner=user)
    _row, token = ApiToken.issue(user=user)
    client = Client(headers={"Authorization": f"Bearer {token}"}, HTTP_HOST="localhost")
    plain = [p for p, pw in zip(paths, passwords, strict=True) if not pw]
    requests = [({"files": [SimpleUploadedFile(p.name, p.read_bytes()) for p in plain]}, "")]
    requests += [
        ({"files": [SimpleUploadedFile(p.name, p.read_bytes())], "password": pw}, p.name)
        for p, pw in zip(paths, passwords, strict=True)
        if pw
    ]
    print("\n### All files through the API\n")
    jobs = []
    for payload, label in requests:
        started = time.perf_counter()
        response = client.post("/api/kbs/real/documents", payload)
        upload_s = time.perf_counter() - started
        body = response.json()
        print(
            f"- request{f' for `{label}` with its password' if label else ''}: "
            f"HTTP {response.status_code} in {upload_s:.1f} s, "
            f"{len(body.get('accepted', []))} accepted, {len(body.get('rejected', []))} rejected"
        )
        for item in body.get("rejected", []):
            print(f"  - rejected `{item.get('filename', item)}`: {item.get('reason', '')}")
        jobs.append(IngestionJob.objects.latest("pk"))
    started = time.perf_counter()
    for job in jobs:
        run_job_and_queue(job.pk)
    job_s = time.perf_counter() - started
    done = failed = embedded = persisted = 0
    for job in jobs:
        job.refresh_from_db()
        done, failed = done + job.documents_done, failed + job.documents_failed
        embedded, persisted = embedded + job.embedded, persisted + job.persisted
    statuses = collections.Counter(Document.objects.values_list("status", flat=True))
    print(
        f"- {len(jobs)} jobs ({', '.join(sorted({j.status for j in jobs}))}) in {job_s:.1f} s: "
        f"{done} done, {failed} failed, {embedded} chunks embedded, {persisted} persisted"
    )
    print(
        f"- documents: {dict(statuses)}; job counters match: "
        f"{done == statuses.get('indexed', 0) and failed == statuses.get('failed', 0)}"
    )
    for doc in Document.objects.filter(status="failed"):
        print(f"  - failed `{doc.original_filename}`: {doc.error_message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markitdown", metavar="PYTHON", help="a Python with markitdown[all]")
    parser.add_argument("--ingest", action="store_true", help="then all files through the API")
    parser.add_argument("--ingest-only", action="store_true", help="only that")
    parser.add_argument("--no-passwords", action="store_true", help="encrypted files stay locked")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is missing (the shared datasets)")
    entries = manifest()
    paths = [DATA / e["file"] for e in entries]
    passwords = ["" if args.no_passwords else password_of(e) for e in entries]
    if not args.ingest_only:
        report("RAG Studio", entries, ours(paths, passwords))
    if args.markitdown:
        report("markitdown 0.1.9", entries, markitdown(args.markitdown, paths))
    if args.ingest or args.ingest_only:
        ingest(paths, passwords)


if __name__ == "__main__":
    main()
