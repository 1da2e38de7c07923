"""The metrics the processes count themselves (requests, searches, jobs ended), in the
Prometheus client's registry. Under ``manage.py serve`` each process writes them to files in
PROMETHEUS_MULTIPROC_DIR (set before this module is first imported) and /metrics adds up
every process's; elsewhere (the development server, tests) they live in this process.
What the database knows (queues, generations, storage) is read when /metrics is asked."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds: a page or a search is tens of milliseconds, an upload of many files seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "ragstudio_http_requests",
    "HTTP requests answered, by route (the URL pattern), method and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "ragstudio_http_request_duration_seconds",
    "Time to answer an HTTP request, by route and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
SEARCHES = Counter("ragstudio_searches", "Searches run, by mode.", ["mode"])
SEARCH_SECONDS = Histogram(
    "ragstudio_search_duration_seconds",
    "Time a search took in the search service, by mode.",
    ["mode"],
    buckets=LATENCY_BUCKETS,
)
JOBS_ENDED = Counter(
    "ragstudio_jobs_ended",
    "Jobs that ended in this installation's workers, by kind and final status.",
    ["kind", "status"],
)


def route_label(pattern: str | None) -> str:
    """A route as a label: the URL pattern (never the path, whose ids and slugs would make
    a series per object); requests no pattern matched share one."""
    return pattern[:120] if pattern else "unmatched"
