"""Thread-safe job counters: the pipeline writes them, a reporter reads snapshots."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

_COUNTERS = frozenset({"total", "embedded", "persisted", "skipped", "errors", "retries", "queued"})


@dataclass(frozen=True, slots=True)
class DocumentOutcome:
    document_id: int
    ok: bool
    chunk_count: int = 0
    error: str = ""
    version: int = 1
    reused: int = 0  # chunks whose vector was found, not computed
    language: str = ""  # detected in its text ('' when too little text)


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    total: int
    embedded: int
    persisted: int
    buffered: int
    skipped: int
    errors: int
    retries: int
    rate: float  # chunks with a vector ready per second, recent window
    eta_seconds: float | None  # None until the total is known and the rate measured
    elapsed: float
    # A remote embedder's throttle: concurrency, batch size, requests and tokens a
    # minute, throttle events, the last one in words (None: not a remote embedder).
    embedding: dict[str, object] | None = None
    # Every document has been chunked: the total will not grow any more.
    total_known: bool = False

    @property
    def ready(self) -> int:
        """Chunks with a vector: computed now or reused."""
        return self.embedded + self.skipped


# The rate is measured over the last WINDOW seconds of embedding; an ETA is given once
# it has been measured over MIN_RATE_SPAN seconds (the first batches of a job, with the
# model warming up, would otherwise promise hours) and the total is known.
RATE_WINDOW_SECONDS = 30.0
MIN_RATE_SPAN_SECONDS = 5.0


@dataclass
class Progress:
    clock: Callable[[], float] = time.monotonic
    window_seconds: float = RATE_WINDOW_SECONDS
    total_known: bool = False
    total: int = 0
    embedded: int = 0
    persisted: int = 0
    skipped: int = 0
    errors: int = 0
    retries: int = 0
    queued: int = 0  # rows handed to the sink; queued - persisted are buffered
    embedding: Callable[[], dict[str, object] | None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _samples: deque[tuple[float, int]] = field(default_factory=deque, repr=False)
    _outcomes: deque[DocumentOutcome] = field(default_factory=deque, repr=False)
    _started: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._started = self.clock()
        self._samples.append((self._started, 0))

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, value in deltas.items():
                if name not in _COUNTERS:
                    raise AttributeError(name)
                setattr(self, name, getattr(self, name) + value)
            if "embedded" in deltas or "skipped" in deltas:
                now = self.clock()
                self._samples.append((now, self.embedded + self.skipped))
                while len(self._samples) > 2 and now - self._samples[0][0] > self.window_seconds:
                    self._samples.popleft()

    def counting(self) -> None:
        """More documents are about to be chunked: the total may grow again."""
        with self._lock:
            self.total_known = False

    def counted(self) -> None:
        """Every document has been chunked: the total is final."""
        with self._lock:
            self.total_known = True

    def start_rate_window(self) -> None:
        """Measure the rate from now on (parsing and model loading are not throughput)."""
        with self._lock:
            self._samples.clear()
            self._samples.append((self.clock(), self.embedded + self.skipped))

    def document_done(self, outcome: DocumentOutcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    def drain_outcomes(self) -> list[DocumentOutcome]:
        with self._lock:
            items = list(self._outcomes)
            self._outcomes.clear()
        return items

    def restore_outcomes(self, outcomes: list[DocumentOutcome]) -> None:
        """Put back outcomes that could not be recorded, ahead of newer ones."""
        with self._lock:
            self._outcomes.extendleft(reversed(outcomes))

    def snapshot(self) -> ProgressSnapshot:
        embedding = self.embedding() if self.embedding is not None else None
        with self._lock:
            now = self.clock()
            ready = self.embedded + self.skipped
            first_t, first_n = self._samples[0]
            span = now - first_t
            rate = (ready - first_n) / span if span > 0 else 0.0
            remaining = max(self.total - ready, 0)
            eta: float | None = None
            if self.total_known and remaining == 0:
                eta = 0.0
            elif self.total_known and rate > 0 and span >= MIN_RATE_SPAN_SECONDS:
                eta = remaining / rate
            return ProgressSnapshot(
                total=self.total,
                embedded=self.embedded,
                persisted=self.persisted,
                buffered=max(self.queued - self.persisted, 0),
                skipped=self.skipped,
                errors=self.errors,
                retries=self.retries,
                rate=rate,
                eta_seconds=eta,
                elapsed=now - self._started,
                embedding=embedding,
                total_known=self.total_known,
            )
