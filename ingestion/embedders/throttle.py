"""Several embedding requests in flight, inside the provider's limits, known or not.

- Token buckets hold the configured requests/min and tokens/min (0: not configured).
- An AIMD throttle learns the limits nobody configured: concurrency starts at one request
  and grows by one after each run of successes as long as the current level (additive
  increase); a 429 halves it and caps the request rate at half the rate just seen
  (multiplicative decrease; the cap grows back by 2 requests/s each second of successes,
  and it is what still works at one request in flight, for a provider that answers fast),
  and halves the batch size once that cap is one request a second; every request waits
  out ``Retry-After``. Requests are paced over the provider's latency so that they do not
  leave in waves.
  The level that tripped is remembered: concurrency grows back to just under it and then
  the batches grow instead (more texts per request costs no extra requests), until a long
  run of successes lets it probe one level higher again.
- ``embed_stream`` yields the results in input order, whatever order requests finish in;
  a batch whose retries run out is yielded as an error for its texts alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from ragstudio.core.types import EmbeddingError, Matrix

RATE_WINDOW = 60.0  # seconds of completed requests behind the per-minute rates
PROBE_AFTER = 200  # successes just under the learned ceiling before probing above it
MIN_RATE = 0.2  # requests/s: the learned rate cap never goes below this
OBSERVE = 2.0  # seconds of request starts behind the rate a 429 halves
RATE_GROWTH = 2.0  # requests/s the learned rate cap grows by each second of successes


class Retryable(Exception):
    """A failure worth another attempt (5xx, timeout, dropped connection, 429)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after  # seconds the provider asked us to wait, if any


class Throttled(Retryable):
    """The provider answered 429: a retry that also lowers the throttle."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("HTTP 429", retry_after)


def out_of_retries(attempts: int, reason: str) -> EmbeddingError:
    """The error of a batch whose attempts are all spent (it fails its documents only)."""
    return EmbeddingError(
        f"embedding API failed after {attempts} attempts (last: {reason})",
        retries_exhausted=True,
    )


@dataclass(frozen=True)
class ThrottleSettings:
    max_concurrency: int = 8
    requests_per_minute: int = 0  # 0: not configured
    tokens_per_minute: int = 0
    batch_items: int = 32  # texts per request to start with
    max_batch_items: int = 256
    max_batch_tokens: int = 100_000
    max_retries: int = 6
    adaptive: bool = True  # False: fixed concurrency and batch size (benchmarks)


class TokenBucket:
    """``per_minute`` units a minute, in bursts of at most a second's worth (or one
    request's worth, when a single request is larger than that)."""

    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self.clock = clock
        self.updated = clock()

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (0: take it now)."""
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(amount, self.capacity)
        return 0.0 if self.level >= needed else (needed - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount  # may go below zero for a request larger than a burst


@dataclass
class AdaptiveThrottle:
    """AIMD state shared by the requests of one embedder (thread-safe)."""

    settings: ThrottleSettings
    clock: Callable[[], float] = time.monotonic
    concurrency: int = 1
    batch_items: int = 1
    ceiling: int | None = None  # the concurrency that drew a 429
    events: int = 0  # 429s that lowered a limit
    throttled: int = 0  # every 429
    retries: int = 0
    note: str = ""
    paused_until: float = 0.0
    epoch: int = 0  # bumped by each decrease; a 429 from an older epoch lowers nothing
    _streak: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _done: deque[tuple[float, int, int]] = field(default_factory=deque, repr=False)
    _starts: deque[float] = field(default_factory=deque, repr=False)
    rate_cap: float | None = None  # requests/s learned from 429s (None: none yet)
    latency: float = 0.0  # seconds a successful request takes (moving average)
    _cap_grown: float = 0.0

    def __post_init__(self) -> None:
        s = self.settings
        self.batch_items = max(1, min(s.batch_items, s.max_batch_items))
        self.concurrency = 1 if s.adaptive else max(1, s.max_concurrency)

    def success(self, texts: int, tokens: int, seconds: float = 0.0) -> None:
        with self._lock:
            self._done.append((self.clock(), texts, tokens))
            if seconds > 0:
                self.latency = seconds if self.latency == 0 else 0.8 * self.latency + 0.2 * seconds
            if not self.settings.adaptive:
                return
            s = self.settings
            self._streak += 1
            if self.rate_cap is not None:  # additive increase, in requests/s per second
                now = self.clock()
                self.rate_cap += RATE_GROWTH * min(now - self._cap_grown, 1.0)
                self._cap_grown = now
            below_ceiling = self.ceiling is None or self.concurrency < self.ceiling - 1
            if below_ceiling and self.concurrency < s.max_concurrency:
                if self._streak >= self.concurrency:  # a full level's worth of successes
                    self.concurrency += 1
                    self._streak = 0
                return
            # At the learned ceiling (or the configured maximum): grow the batches instead,
            # and after a long quiet run try one level higher.
            if self._streak % self.concurrency == 0 and self.batch_items < s.max_batch_items:
                self.batch_items = min(s.max_batch_items, self.batch_items + s.batch_items)
            if self.ceiling is not None and self._streak >= PROBE_AFTER:
                self.ceiling += 1
                self._streak = 0

    def throttle(self, retry_after: float | None, epoch: int, backoff: float) -> None:
        with self._lock:
            self.throttled += 1
            self.retries += 1
            wait = retry_after if retry_after is not None else backoff
            self.paused_until = max(self.paused_until, self.clock() + wait)
            if not self.settings.adaptive or epoch < self.epoch:
                return  # sent before the last decrease: that one already answered it
            self.epoch += 1
            self.events += 1
            self._streak = 0
            self.ceiling = self.concurrency
            now = self.clock()
            # The rate of the requests just sent drew the 429: half of it from now on
            # (with fewer in flight, or at one request in flight, where concurrency can do
            # no more for a provider that answers fast), and once that is one request a
            # second or less, halve the batches too.
            before = self.rate_cap
            starts = list(self._starts)
            if len(starts) >= 2 and starts[-1] > starts[0]:
                observed = (len(starts) - 1) / (starts[-1] - starts[0])
                self.rate_cap = max(MIN_RATE, min(observed, before or observed) / 2)
                self._cap_grown = now
            if self.concurrency > 1:
                self.concurrency = max(1, self.concurrency // 2)
                self.note = f"throttled to {self.concurrency} in flight after 429"
            elif before is not None and before <= 1.0:
                self.batch_items = max(1, self.batch_items // 2)
                self.note = f"throttled to batches of {self.batch_items} after 429"
            elif self.rate_cap is not None:
                self.note = f"throttled to {self.rate_cap:.1f} requests/s after 429"
            else:
                self.note = f"paused {wait:.1f} s after 429"

    def sent(self) -> None:
        """A request leaves: recorded for the rate cap."""
        with self._lock:
            now = self.clock()
            self._starts.append(now)
            while self._starts and now - self._starts[0] > OBSERVE:
                self._starts.popleft()

    def rate_wait(self) -> float:
        """Seconds before the next request may go (0: now): requests are paced evenly
        over the provider's latency instead of leaving in waves (a wave that crosses a
        limit draws several 429s before the first one is back), and never faster than
        the learned rate cap."""
        with self._lock:
            if not self._starts:
                return 0.0
            interval = self.latency / max(self.concurrency, 1) if self.settings.adaptive else 0.0
            if self.rate_cap is not None:
                interval = max(interval, 1.0 / self.rate_cap)
            return self._starts[-1] + interval - self.clock()

    def retried(self) -> None:
        with self._lock:
            self.retries += 1

    def stats(self) -> dict[str, object]:
        """What the job shows: current limits, rates over the last minute, events."""
        with self._lock:
            now = self.clock()
            while self._done and now - self._done[0][0] > RATE_WINDOW:
                self._done.popleft()
            span = min(RATE_WINDOW, max(now - self._done[0][0], 1.0)) if self._done else 1.0
            return {
                "concurrency": self.concurrency,
                "batch_items": self.batch_items,
                "requests_per_min": round(len(self._done) * 60.0 / span, 1),
                "tokens_per_min": round(sum(t for _, _, t in self._done) * 60.0 / span),
                "rate_cap": None if self.rate_cap is None else round(self.rate_cap, 2),
                "throttle_events": self.events,
                "throttled_requests": self.throttled,
                "retries": self.retries,
                "note": self.note,
            }


Send = Callable[[Sequence[str]], Matrix]


@dataclass
class _Request:
    start: int
    end: int
    texts: list[str]
    counts: list[int]
    attempt: int = 0
    epoch: int = 0
    not_before: float = 0.0
    sent_at: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(self.counts)


def _one(request: _Request) -> float:
    return 1.0


def _tokens(request: _Request) -> float:
    return float(request.tokens)


class ConcurrentEmbedding:
    """Dispatches batches of a text sequence to ``send`` (one HTTP attempt, raising
    Throttled, Retryable or EmbeddingError), within the buckets and the throttle."""

    def __init__(
        self,
        send: Send,
        settings: ThrottleSettings,
        *,
        backoff: Callable[[int, float | None], float],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.send = send
        self.settings = settings
        self.backoff = backoff
        self.clock = clock
        self.sleep = sleep
        self.throttle = AdaptiveThrottle(settings, clock=clock)
        self._buckets: list[tuple[TokenBucket, Callable[[_Request], float]]] = []
        if settings.requests_per_minute:
            self._buckets.append((TokenBucket(settings.requests_per_minute, clock), _one))
        if settings.tokens_per_minute:
            self._buckets.append((TokenBucket(settings.tokens_per_minute, clock), _tokens))
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, settings.max_concurrency), thread_name_prefix="embed-http"
        )

    def embed_stream(
        self,
        items: Iterable[tuple[str, int]],
        *,
        on_retry: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[int, int, Matrix | EmbeddingError]]:
        """(start, end, vectors or the error that ended the batch) for consecutive
        batches of ``items`` (text, token count), in order. Items are read as requests
        need them, so a long stream never waits for its producer to finish."""
        source = iter(items)
        lookahead: list[tuple[str, int]] = []
        cursor = 0  # position of the next item to cut into a request
        retry: deque[_Request] = deque()
        running: dict[Future[Matrix], _Request] = {}
        finished: dict[int, tuple[int, Matrix | EmbeddingError]] = {}
        next_out = 0
        exhausted = False
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    return
                # Send what the throttle and the buckets allow now.
                wait_s = 0.5
                while len(running) < self.throttle.concurrency:
                    cut = retry[0] if retry else self._cut(cursor, source, lookahead)
                    if cut is None:
                        exhausted = True
                        break
                    request = cut
                    delay = self._wait_before(request)
                    if delay > 0:
                        if not retry:  # a new batch: give its items back, re-cut later
                            lookahead[:0] = list(zip(request.texts, request.counts, strict=True))
                        if not running:
                            self.sleep(min(delay, 1.0))
                        wait_s = min(wait_s, max(delay, 0.005))
                        break
                    if retry:
                        retry.popleft()
                    else:
                        cursor = request.end
                    self._bucket_take(request)
                    request.epoch = self.throttle.epoch
                    self.throttle.sent()
                    request.sent_at = self.clock()
                    future = self._pool.submit(self.send, request.texts)
                    running[future] = request
                if running:
                    done, _ = wait(list(running), timeout=wait_s, return_when=FIRST_COMPLETED)
                    for future in done:
                        request = running.pop(future)
                        outcome = self._outcome(future, request, on_retry)
                        if outcome is None:
                            retry.append(request)
                        else:
                            finished[request.start] = (request.end, outcome)
                while next_out in finished:
                    end, outcome = finished.pop(next_out)
                    yield next_out, end, outcome
                    next_out = end
                if exhausted and not running and not retry:
                    return  # everything sent and answered
        finally:
            for future in running:
                future.cancel()

    def _cut(
        self, cursor: int, source: Iterator[tuple[str, int]], lookahead: list[tuple[str, int]]
    ) -> _Request | None:
        """The next batch from ``cursor``: the throttle's size, within the token limit;
        None when the items are exhausted. An item that does not fit waits in
        ``lookahead`` for the next batch."""
        texts: list[str] = []
        counts: list[int] = []
        while len(texts) < self.throttle.batch_items:
            if lookahead:
                text, count = lookahead.pop(0)
            else:
                item = next(source, None)
                if item is None:
                    break
                text, count = item
            if texts and sum(counts) + count > self.settings.max_batch_tokens:
                lookahead.insert(0, (text, count))
                break
            texts.append(text)
            counts.append(count)
        if not texts:
            return None
        return _Request(cursor, cursor + len(texts), texts, counts)

    def _wait_before(self, request: _Request) -> float:
        """Seconds before ``request`` may go: a pause after a 429, its own retry delay,
        the configured buckets."""
        now = self.clock()
        waits = [
            self.throttle.paused_until - now,
            request.not_before - now,
            self.throttle.rate_wait(),
        ]
        for bucket, cost in self._buckets:
            waits.append(bucket.wait_time(cost(request)))
        return max(waits)

    def _bucket_take(self, request: _Request) -> None:
        for bucket, cost in self._buckets:
            bucket.take(cost(request))

    def _outcome(
        self,
        future: Future[Matrix],
        request: _Request,
        on_retry: Callable[[str], None] | None,
    ) -> Matrix | EmbeddingError | None:
        """The batch's result, or None when it goes back in the queue for a retry."""
        try:
            vectors = future.result()
        except Retryable as exc:
            reason, retry_after = exc.reason, exc.retry_after
            delay = self.backoff(request.attempt, retry_after)
            if isinstance(exc, Throttled):
                self.throttle.throttle(retry_after, request.epoch, delay)
            else:
                self.throttle.retried()
        except EmbeddingError as exc:
            return exc
        else:
            self.throttle.success(
                request.end - request.start, request.tokens, self.clock() - request.sent_at
            )
            return vectors
        if request.attempt >= self.settings.max_retries:
            return out_of_retries(request.attempt + 1, reason)
        request.attempt += 1
        request.not_before = self.clock() + delay
        if on_retry is not None:
            on_retry(reason)
        return None
