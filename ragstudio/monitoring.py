"""What an operator watches: each request's id, origin, metrics and (when asked for) log
line, and ``/metrics`` in the Prometheus text format: what the processes counted (every
process's, under ``serve``) and what the database says now (jobs, queue, generations,
storage)."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, Min, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ingestion.models import IngestionJob
from knowledge_bases.models import Document, DocumentVersion, Generation, KnowledgeBase
from ragstudio.auth import bearer_token, client_ip
from ragstudio.core import metrics
from ragstudio.core.files import directory_bytes
from ragstudio.core.origin import Origin, acting_from

log = logging.getLogger("ragstudio.requests")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
API_PREFIXES = ("/api/", "/v1/", "/dify/", "/mcp")


class RequestContextMiddleware:
    """First in the chain: gives each request an id (the client's ``X-Request-ID`` when it
    is a plain token, else a new one; sent back), the origin audit events read, its
    metrics, and a log line when RAGSTUDIO_ACCESS_LOG is on or logs are JSON."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.log_requests = settings.ACCESS_LOG or settings.LOG_FORMAT == "json"

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        via = "api" if request.path.startswith(API_PREFIXES) else "web"
        origin = Origin(via=via, ip=client_ip(request), request=request, request_id=request_id)
        with acting_from(origin):
            response = self.get_response(request)
        seconds = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        route = metrics.route_label(match.route if match is not None else None)
        method = request.method or "GET"
        if method not in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}:
            method = "other"
        metrics.REQUESTS.labels(route, method, str(response.status_code)).inc()
        metrics.REQUEST_SECONDS.labels(route, method).observe(seconds)
        response["X-Request-ID"] = request_id
        if self.log_requests and route != "metrics":
            user = origin.user()
            kwargs = match.kwargs if match is not None else {}
            log.info(
                "%s %s %s %.1f ms",
                method,
                request.path,
                response.status_code,
                seconds * 1000,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "path": request.path,
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 1),
                    "user": user.get_username() if user is not None else None,
                    "kb": kwargs.get("slug"),
                    "ip": origin.ip,
                },
            )
        return response


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    given = bearer_token(request)
    if token and given is not None and secrets.compare_digest(given, token):
        return True
    try:
        address = ipaddress.ip_address(client_ip(request))
    except ValueError:
        return False
    return any(address in network for network in settings.METRICS_ALLOW)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format. Allowed from RAGSTUDIO_METRICS_ALLOW (loopback by
    default) or with ``Authorization: Bearer $RAGSTUDIO_METRICS_TOKEN``."""
    if not _allowed(request):
        return JsonResponse(
            {
                "error": "metrics are served to the addresses in RAGSTUDIO_METRICS_ALLOW, "
                "or with the bearer token RAGSTUDIO_METRICS_TOKEN"
            },
            status=403,
        )
    body = generate_latest(_process_registry()) + generate_latest(_database_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def _process_registry() -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return registry


class DatabaseCollector(Collector):
    """What the database knows at the moment of the scrape (the same from every process)."""

    def collect(self) -> Iterator[Any]:
        jobs = GaugeMetricFamily(
            "ragstudio_jobs", "Jobs in the database, by kind and status.", labels=["kind", "status"]
        )
        for row in IngestionJob.objects.values("kind", "status").annotate(n=Count("id")):
            jobs.add_metric([row["kind"], row["status"]], row["n"])
        yield jobs
        queued = IngestionJob.objects.filter(status=IngestionJob.Status.QUEUED)
        summary = queued.aggregate(n=Count("id"), oldest=Min("created_at"))
        yield GaugeMetricFamily(
            "ragstudio_queue_depth", "Jobs queued and not started.", value=summary["n"]
        )
        oldest = summary["oldest"]
        age = (timezone.now() - oldest).total_seconds() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "ragstudio_queue_oldest_age_seconds",
            "How long the oldest queued job has waited (0 when none).",
            value=max(0.0, age),
        )
        totals = IngestionJob.objects.aggregate(
            embedded=Sum("embedded"), persisted=Sum("persisted")
        )
        yield CounterMetricFamily(
            "ragstudio_chunks_embedded",
            "Chunks embedded by the jobs in the database.",
            value=totals["embedded"] or 0,
        )
        yield CounterMetricFamily(
            "ragstudio_chunks_persisted",
            "Chunk rows written by the jobs in the database.",
            value=totals["persisted"] or 0,
        )
        throttle = GaugeMetricFamily(
            "ragstudio_embedding_throttle",
            "A running job's embedding limits and events (remote models): concurrency, "
            "batch_items, requests_per_min, rate_cap, throttle_events...",
            labels=["job", "measure"],
        )
        running = IngestionJob.objects.filter(status=IngestionJob.Status.RUNNING)
        for job_id, embedding in running.values_list("pk", "embedding")[:50]:
            for name, value in (embedding or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    throttle.add_metric([str(job_id), name], float(value))
        yield throttle
        generations = GaugeMetricFamily(
            "ragstudio_generations", "Generations by status.", labels=["status"]
        )
        for status, n in Generation.objects.values_list("status").annotate(n=Count("id")):
            generations.add_metric([status], n)
        yield generations
        yield GaugeMetricFamily(
            "ragstudio_knowledge_bases", "Knowledge bases.", value=KnowledgeBase.objects.count()
        )
        yield GaugeMetricFamily("ragstudio_documents", "Documents.", value=Document.objects.count())
        storage = GaugeMetricFamily(
            "ragstudio_storage_bytes",
            "Bytes stored: uploaded files (each stored once) and, on local disk, the indexes.",
            labels=["kind"],
        )
        uploads = (
            DocumentVersion.objects.values("storage_path")
            .distinct()
            .aggregate(total=Sum("size"))["total"]
        )
        storage.add_metric(["uploads"], float(uploads or 0))
        indexes = _index_bytes()
        if indexes is not None:
            storage.add_metric(["indexes"], float(indexes))
        yield storage


_disk_lock = threading.Lock()
_disk: tuple[float, int | None] = (0.0, None)
DISK_EVERY = 60.0  # seconds a measure of the index directories is reused


def _index_bytes() -> int | None:
    """The local index directories' size (LanceDB, tantivy), measured at most once a
    minute per process; None when the indexes live in an object store."""
    global _disk
    cfg = settings.RAGSTUDIO
    lance = str(cfg["LANCEDB_URI"])
    if "://" in lance:
        return None
    with _disk_lock:
        measured, value = _disk
        if time.monotonic() - measured < DISK_EVERY and value is not None:
            return value
        total = directory_bytes(Path(lance), Path(cfg["BM25_DIR"]))
        _disk = (time.monotonic(), total)
        return total


_database_registry = CollectorRegistry(auto_describe=False)
_database_registry.register(DatabaseCollector())
