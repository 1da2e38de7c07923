"""The promotion workload shared by bench/promote.py and its test: one process flips the
active generation (promote, rollback) and runs GC, while `python -m
ragstudio.testing.probe` searches in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from knowledge_bases.models import KnowledgeBase
from knowledge_bases.services import generation_promote, generation_rollback, generations_gc
from ragstudio.core.errors import Conflict

ROOT = Path(__file__).resolve().parents[2]  # the repository


def start_probe(
    kb: KnowledgeBase, work: Path, env: dict[str, str]
) -> tuple[subprocess.Popen, Path, Path]:
    stop, out = work / "stop", work / "probe.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragstudio.testing.probe",
            "--kb-id",
            str(kb.pk),
            "--stop-file",
            str(stop),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
    )
    ready = out.parent / (out.name + ".ready")
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the search probe did not start")
        time.sleep(0.1)  # waiting for the reader process to be up, bounded
    return proc, stop, out


def flip_generations(
    kb: KnowledgeBase, numbers: list[int], *, flips: int, gc_every: int, min_seconds: float = 0.0
) -> dict[str, Any]:
    """Promote each of ``numbers`` in turn, roll back every third flip, GC every
    ``gc_every`` flips; at least ``flips`` flips and ``min_seconds``. Returns how many of
    each happened and the slowest flip."""
    done: dict[str, Any] = {
        "flips": 0,
        "promotes": 0,
        "rollbacks": 0,
        "gc_runs": 0,
        "collected": [],
        "slowest_flip_ms": 0.0,
    }
    started_all = time.monotonic()
    i = -1
    while i + 1 < flips or time.monotonic() - started_all < min_seconds:
        i += 1
        done["flips"] += 1
        started = time.perf_counter()
        try:
            if i % 3 == 2:
                generation_rollback(kb=kb)
                done["rollbacks"] += 1
            else:
                active = KnowledgeBase.objects.values_list(
                    "active_generation__number", flat=True
                ).get(pk=kb.pk)
                others = [n for n in numbers if n != active]
                generation_promote(kb=kb, number=others[i % len(others)])
                done["promotes"] += 1
        except Conflict:
            pass  # nothing older to roll back to: a legal refusal
        done["slowest_flip_ms"] = max(
            done["slowest_flip_ms"], (time.perf_counter() - started) * 1000
        )
        if i % gc_every == 0:
            done["collected"] += generations_gc(kb=kb)["collected"]
            done["gc_runs"] += 1
    return done


def stop_probe(proc: subprocess.Popen, stop: Path, out: Path) -> dict[str, Any]:
    stop.write_text("stop")
    proc.wait(timeout=60)
    return json.loads(out.read_text())
