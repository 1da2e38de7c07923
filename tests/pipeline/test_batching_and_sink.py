from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pytest

from ingestion.pipeline.batching import make_batches
from ingestion.pipeline.sink import BufferedSink
from ragstudio.core.types import Chunk, EmbeddedChunk, PipelineError


def _chunk(i: int, tokens: int) -> Chunk:
    return Chunk(
        id=f"c{i}", document_id=1, ordinal=i, text=f"t{i}", content_hash=f"h{i}", token_count=tokens
    )


def _rows(n: int, start: int = 0) -> list[EmbeddedChunk]:
    return [EmbeddedChunk(_chunk(start + i, 5), np.zeros(4, np.float32)) for i in range(n)]


class RecordingStore:
    """Records each write; optionally slow, to show back-pressure."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.writes: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on

    def write(self, rows: Sequence[EmbeddedChunk]) -> None:
        if self.fail_on is not None and len(self.writes) == self.fail_on:
            raise OSError("disk full")
        time.sleep(self.delay)
        self.writes.append([r.chunk.id for r in rows])

    def delete_versions(self, keys: Sequence[tuple[int, int]]) -> None:
        raise AssertionError("not expected")


def test_batches_hold_every_chunk_once_within_item_and_padded_token_limits() -> None:
    lengths = [5, 250, 30, 31, 200, 7, 120, 64, 64, 3] * 13
    chunks = [_chunk(i, n) for i, n in enumerate(lengths)]
    batches = list(make_batches(chunks, max_items=8, max_tokens=1000, window=50))
    assert sorted(c.id for b in batches for c in b) == sorted(c.id for c in chunks)
    for batch in batches:
        assert len(batch) <= 8
        assert len(batch) == 1 or len(batch) * max(c.token_count for c in batch) <= 1000


def test_batches_group_similar_lengths_to_limit_padding() -> None:
    lengths = [10, 200] * 32
    chunks = [_chunk(i, n) for i, n in enumerate(lengths)]
    batches = list(make_batches(chunks, max_items=32, max_tokens=100_000))
    assert [sorted({c.token_count for c in b}) for b in batches] == [[10], [200]]


@pytest.mark.parametrize(
    ("n", "batch_size"), [(0, 10), (1, 10), (10, 10), (11, 10), (12345, 1000), (95, 1)]
)
def test_sink_writes_exactly_ceil_n_over_batch_size_times(n: int, batch_size: int) -> None:
    store = RecordingStore()
    flushed: list[int] = []
    with BufferedSink(
        store, batch_size=batch_size, on_flush=lambda rows: flushed.append(len(rows))
    ) as sink:
        for start in range(0, n, 7):  # producer batches of 7 that do not align with the sink's
            sink.put(_rows(min(7, n - start), start))
    assert len(store.writes) == math.ceil(n / batch_size) == sink.writes
    assert all(len(w) == batch_size for w in store.writes[:-1])
    assert [c for w in store.writes for c in w] == [f"c{i}" for i in range(n)]
    assert sum(flushed) == n


def test_sink_applies_back_pressure_when_the_store_is_slow() -> None:
    store = RecordingStore(delay=0.3)
    sink = BufferedSink(store, batch_size=1, max_pending=2)
    sink.start()
    started = time.monotonic()
    for i in range(6):
        sink.put(_rows(1, i))
    blocked_for = time.monotonic() - started
    sink.close()
    # Six single-row writes of 0.3 s with room for two in the queue: put() had to wait.
    assert blocked_for >= 0.5
    assert len(store.writes) == 6


def test_sink_flushes_the_partial_buffer_on_close() -> None:
    store = RecordingStore()
    sink = BufferedSink(store, batch_size=1000)
    sink.start()
    sink.put(_rows(3))
    assert store.writes == []  # still buffered
    sink.close()
    assert store.writes == [["c0", "c1", "c2"]]


def test_a_store_failure_reaches_the_producer() -> None:
    store = RecordingStore(fail_on=1)
    sink = BufferedSink(store, batch_size=2, max_pending=1)
    sink.start()
    with pytest.raises(PipelineError, match="disk full"):
        for i in range(100):
            sink.put(_rows(2, i * 2))
        sink.close()
    assert len(store.writes) == 1


def test_progress_rate_and_eta_come_from_the_recent_window() -> None:
    from ingestion.pipeline.progress import Progress

    now = [0.0]
    progress = Progress(clock=lambda: now[0], window_seconds=10.0)
    progress.add(total=1000)
    progress.counted()
    now[0] = 30.0  # parsing and model loading: not throughput
    progress.start_rate_window()
    for _ in range(10):
        now[0] += 1.0
        progress.add(embedded=20, queued=20)
    progress.add(persisted=150)
    snap = progress.snapshot()
    assert snap.rate == pytest.approx(20.0)
    assert snap.eta_seconds == pytest.approx((1000 - 200) / 20.0)
    assert (snap.ready, snap.buffered) == (200, 50)
    for _ in range(20):  # slower now: the window forgets the old pace
        now[0] += 1.0
        progress.add(skipped=5)
    assert progress.snapshot().rate == pytest.approx(5.0, rel=0.1)


def test_no_eta_while_the_total_is_still_counted_or_the_rate_barely_measured() -> None:
    from ingestion.pipeline.progress import MIN_RATE_SPAN_SECONDS, Progress

    now = [0.0]
    progress = Progress(clock=lambda: now[0])
    progress.add(total=100)
    progress.start_rate_window()
    now[0] += 1.0
    progress.add(embedded=2)  # a slow first batch: it would promise a long wait
    snap = progress.snapshot()
    assert snap.eta_seconds is None and not snap.total_known
    progress.counted()
    assert progress.snapshot().eta_seconds is None  # measured over 1 s only
    now[0] += MIN_RATE_SPAN_SECONDS
    progress.add(embedded=50)
    snap = progress.snapshot()
    assert snap.total_known and snap.eta_seconds == pytest.approx(48 / (52 / 6.0))
    progress.counting()  # a rebuild takes in late documents: counting again
    assert progress.snapshot().eta_seconds is None


def test_the_eta_moves_no_more_than_the_rate_when_batches_arrive_in_bursts() -> None:
    import random
    from itertools import pairwise

    from ingestion.pipeline.progress import Progress

    rng = random.Random(7)
    now = [0.0]
    progress = Progress(clock=lambda: now[0])
    progress.add(total=20_000)
    progress.counted()
    progress.start_rate_window()
    etas = []
    while progress.embedded < 18_000:
        # Batches of 256 every 0.5-3 s (about 170 chunks/s), read once a second.
        now[0] += rng.uniform(0.5, 3.0)
        progress.add(embedded=256)
        snap = progress.snapshot()
        if snap.eta_seconds is not None:
            etas.append((now[0], snap.eta_seconds))
    assert etas
    true_rate = progress.embedded / now[0]
    for (t0, e0), (t1, e1) in pairwise(etas):
        # Between two reads the ETA falls by about the time that passed; what is left
        # over is the rate's own wobble, which a 30 s window keeps small.
        assert abs((e0 - e1) - (t1 - t0)) <= 0.2 * e0 + 5, (t0, e0, t1, e1)
    first_at, first_eta = etas[0]
    assert first_eta == pytest.approx((20_000 - true_rate * first_at) / true_rate, rel=0.5)
