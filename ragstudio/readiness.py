"""A process is ready once its models are loaded: web processes (gunicorn, after a worker
initialises and before it takes a request) and worker processes (django-q2, as each
spawns) load the local models that knowledge bases serve with, so the first search or job
does not wait seconds for them. `/readyz` answers 503 until then; `/healthz` only says the
process is alive."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection
from django_q.brokers import get_broker

from ingestion.embedders import LOCAL_PROVIDERS
from knowledge_bases.generations import embedder_get, query_embedder_get, storage_options
from knowledge_bases.models import Generation
from ragstudio.env import rag_settings
from search.stores.objects import ObjectStore

log = logging.getLogger("ragstudio.ready")


@dataclass
class Readiness:
    models: list[str] = field(default_factory=list)
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    loading: threading.Event = field(default_factory=threading.Event)  # started in background
    error: str = ""


_state = Readiness()
_lock = threading.Lock()


def models_to_preload() -> list[str]:
    """The default model and the local models of every serving generation (remote ones
    need a network or a key: they are left to first use)."""
    specs = {rag_settings()["EMBEDDER"]}
    specs.update(
        Generation.objects.filter(status=Generation.Status.ACTIVE)
        .values_list("embedder", flat=True)
        .distinct()
    )
    return sorted(s for s in specs if s in LOCAL_PROVIDERS)


def preload(role: str = "web") -> Readiness:
    """Load (and warm) the models once per process; logs one line. Later calls return
    at once. A model that fails to load is logged and left to fail its first use."""
    with _lock:
        if _state.done.is_set():
            return _state
        started = time.perf_counter()
        try:
            specs = models_to_preload() if rag_settings()["PRELOAD_MODELS"] else []
            for spec in specs:
                # Searches embed their queries with their own threads setting; only a
                # worker embeds documents (and, for evaluations, queries too).
                query_embedder_get(spec).embed_batch(["ready"])
                if role == "worker":
                    embedder_get(spec).embed_batch(["ready"])
            _state.models = specs
        except Exception as exc:  # the process still serves: the first use reports it
            _state.error = f"{type(exc).__name__}: {exc}"
            log.warning("%s process %d: could not preload models", role, os.getpid(), exc_info=True)
        finally:
            connection.close()  # opened here, before the fork's own request handling
        # What is loaded by now (Django, the libraries, the models) lives as long as the
        # process: kept out of the collector's scans, each full collection a search's
        # garbage triggers costs a fraction of what it did (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        _state.seconds = time.perf_counter() - started
        _state.done.set()
        log.info(
            "%s process %d ready: %s loaded in %.1f s",
            role,
            os.getpid(),
            ", ".join(_state.models) or "no local model",
            _state.seconds,
        )
        return _state


def preload_in_background(role: str = "web") -> None:
    """For the development server, which has no hook before its first request (once: a
    readiness probe asking every second starts no second load)."""
    with _lock:
        if _state.loading.is_set() or _state.done.is_set():
            return
        _state.loading.set()
    threading.Thread(target=preload, args=(role,), name="preload", daemon=True).start()


def readiness() -> Readiness:
    return _state


DEPENDENCY_CHECK_EVERY = 10.0  # seconds a broker and store check is reused
_dependencies: tuple[float, dict[str, str]] = (0.0, {})


def dependency_checks() -> dict[str, str]:
    """Whether the task broker and the store answer ("ok" or what failed), checked at
    most every DEPENDENCY_CHECK_EVERY seconds per process (a load balancer asks often)."""
    global _dependencies
    checked_at, checks = _dependencies
    if checks and time.monotonic() - checked_at < DEPENDENCY_CHECK_EVERY:
        return checks
    checks = {"broker": _broker_check(), "store": _store_check()}
    _dependencies = (time.monotonic(), checks)
    return checks


def _broker_check() -> str:
    try:
        return "ok" if get_broker().ping() else "unavailable: no answer"
    except Exception as exc:  # any client error means "not ready", said in the body
        return f"unavailable: {type(exc).__name__}"


def _store_check() -> str:
    cfg = rag_settings()
    try:
        if cfg["STORAGE_URI"]:
            ObjectStore(cfg["STORAGE_URI"], storage_options()).list("readyz/")
            return "ok"
        lance = Path(cfg["LANCEDB_URI"])
        lance.mkdir(parents=True, exist_ok=True)
        return "ok" if os.access(lance, os.W_OK) else "unavailable: not writable"
    except Exception as exc:  # a refused connection, a missing bucket, a full disk
        return f"unavailable: {type(exc).__name__}"
