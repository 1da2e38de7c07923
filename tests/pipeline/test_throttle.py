"""Concurrent remote embedding: the AIMD throttle, the token buckets, and whole streams
against a real HTTP server on 127.0.0.1 with a hidden rate limit."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from ingestion.embedders.openai_compat import OpenAICompatibleEmbedder
from ingestion.embedders.throttle import AdaptiveThrottle, ThrottleSettings, TokenBucket
from ingestion.pipeline.chunk import Chunker
from ingestion.pipeline.runner import run_pipeline
from ragstudio.core.types import EmbeddingError, SourceDocument
from ragstudio.testing.embedding_server import EmbeddingServer, Reply, fake_vector
from search.stores.generation import GenerationStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_aimd_grows_additively_halves_on_429_and_then_grows_the_batches() -> None:
    clock = Clock()
    throttle = AdaptiveThrottle(ThrottleSettings(max_concurrency=8, batch_items=32), clock=clock)
    assert (throttle.concurrency, throttle.batch_items) == (1, 32)
    levels = []
    for _ in range(10):  # one success at 1, two at 2, three at 3, four at 4
        throttle.sent()
        throttle.success(32, 320)
        levels.append(throttle.concurrency)
    assert levels == [2, 2, 3, 3, 3, 4, 4, 4, 4, 5]
    epoch = throttle.epoch
    throttle.throttle(retry_after=2.0, epoch=epoch, backoff=0.5)
    assert (throttle.concurrency, throttle.ceiling, throttle.events) == (2, 5, 1)
    assert throttle.rate_cap is None  # fewer in flight is enough
    assert throttle.note == "throttled to 2 in flight after 429"
    assert throttle.paused_until == pytest.approx(102.0)  # Retry-After, not the backoff
    # Requests sent before the decrease answer 429 too: they lower nothing more.
    throttle.throttle(retry_after=None, epoch=epoch, backoff=0.5)
    assert (throttle.concurrency, throttle.events, throttle.throttled) == (2, 1, 2)
    # Back to just under the level that tripped, then bigger batches instead.
    for _ in range(2 + 3):
        throttle.success(32, 320)
    assert throttle.concurrency == 4
    for _ in range(8):
        throttle.success(32, 320)
    assert (throttle.concurrency, throttle.batch_items) == (4, 96)
    stats = throttle.stats()
    assert stats["throttle_events"] == 1 and stats["retries"] == 2
    # 23 requests within the same second (the rates count at least one second)
    assert (stats["requests_per_min"], stats["tokens_per_min"]) == (23 * 60.0, 23 * 320 * 60)


def test_at_one_request_in_flight_a_429_caps_the_rate_then_halves_the_batch() -> None:
    clock = Clock()
    throttle = AdaptiveThrottle(ThrottleSettings(batch_items=64), clock=clock)
    throttle.sent()
    throttle.throttle(retry_after=None, epoch=0, backoff=1.0)  # nothing to measure yet
    assert (throttle.rate_cap, throttle.note) == (None, "paused 1.0 s after 429")
    for _ in range(7):  # 8 requests 0.25 s apart: 4 a second
        clock.now += 0.25
        throttle.sent()
    clock.now += 0.25
    throttle.throttle(retry_after=None, epoch=1, backoff=1.0)
    assert (throttle.concurrency, throttle.batch_items, throttle.rate_cap) == (1, 64, 2.0)
    assert throttle.note == "throttled to 2.0 requests/s after 429"
    assert throttle.rate_wait() == pytest.approx(0.5 - 0.25)  # spaced 1/2 s apart
    throttle.throttle(retry_after=None, epoch=2, backoff=1.0)
    assert throttle.rate_cap == pytest.approx(1.0)
    throttle.throttle(retry_after=None, epoch=3, backoff=1.0)  # 1/s is already too many
    assert (throttle.batch_items, throttle.note) == (32, "throttled to batches of 32 after 429")


def test_fixed_settings_never_adapt() -> None:
    throttle = AdaptiveThrottle(
        ThrottleSettings(max_concurrency=4, batch_items=32, adaptive=False), clock=Clock()
    )
    for _ in range(50):
        throttle.success(32, 320)
    throttle.throttle(retry_after=1.0, epoch=0, backoff=1.0)
    assert (throttle.concurrency, throttle.batch_items, throttle.events) == (4, 32, 0)
    assert throttle.paused_until > 0  # Retry-After is still honoured


def test_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(per_minute=120, clock=clock)  # 2 a second, bursts of 2
    assert bucket.wait_time(1) == 0
    bucket.take(1)
    bucket.take(1)
    assert bucket.wait_time(1) == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.wait_time(1) == 0
    # A request bigger than a burst waits for a full bucket, then overdraws it.
    big = TokenBucket(per_minute=600, clock=clock)
    big.take(10)
    assert big.wait_time(50) == pytest.approx(1.0)


def _embedder(server: EmbeddingServer, **kwargs) -> OpenAICompatibleEmbedder:
    kwargs.setdefault("max_concurrency", 8)
    return OpenAICompatibleEmbedder(
        model="test-embed", base_url=server.url, api_key="sk-test", dimensions=8, **kwargs
    )


def _items(n: int) -> list[tuple[str, int]]:
    return [(f"text number {i} about topic {i % 7}", 6) for i in range(n)]


@pytest.mark.slow
def test_a_stream_rides_a_hidden_limit_and_keeps_the_input_order() -> None:
    """Hidden limit 10 requests/s, 50 ms a request: concurrency finds its level, the 429s
    stay few, and every vector comes back in input order."""
    with EmbeddingServer(dims=8, latency=0.05, requests_per_s=10) as server:
        embedder = _embedder(server, start_batch_items=4, max_batch_items=16)
        items = _items(600)
        batches = list(embedder.embed_stream(items))
    assert [start for start, _end, _v in batches] == sorted(start for start, _e, _v in batches)
    assert batches[0][0] == 0 and batches[-1][1] == 600
    assert all(b[1] == n[0] for b, n in itertools.pairwise(batches))
    vectors = np.concatenate([v for _s, _e, v in batches])
    expected = np.asarray([fake_vector(t, 8) for t, _ in items], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    stats = embedder.throttle_stats()
    assert stats is not None
    assert server.max_in_flight > 1  # several requests in flight
    assert stats["batch_items"] > 4  # the batches grew
    # Discovering the limit costs a 429 or a few; then the throttle stays under it.
    assert server.throttled <= 6, (server.throttled, server.count, stats)
    assert server.throttled == 0 or stats["throttle_events"] >= 1


@pytest.mark.slow
def test_without_retry_after_the_stream_backs_off_on_its_own() -> None:
    with EmbeddingServer(dims=8, latency=0.02, requests_per_s=8, retry_after=False) as server:
        embedder = _embedder(server, start_batch_items=2, max_batch_items=4)
        batches = list(embedder.embed_stream(_items(200)))
    assert sum(e - s for s, e, _v in batches) == 200
    assert all(not isinstance(v, EmbeddingError) for _s, _e, v in batches)
    assert server.throttled < server.count / 5, (server.throttled, server.count)


def test_configured_limits_are_never_exceeded() -> None:
    """240 requests/min configured (bursts of 4): the hidden limit of 10/s is never hit,
    whatever the timing, and the stream takes at least as long as the limit implies."""
    with EmbeddingServer(dims=8, requests_per_s=10) as server:
        embedder = _embedder(
            server, requests_per_minute=240, start_batch_items=1, max_batch_items=1
        )
        started = time.monotonic()
        batches = list(embedder.embed_stream(_items(16)))
        seconds = time.monotonic() - started
    assert len(batches) == 16 and server.count == 16
    assert server.throttled == 0
    assert seconds >= (16 - 4) / 4 - 0.05  # a burst of 4, then 4 a second


def _store(tmp_path) -> GenerationStore:  # type: ignore[no-untyped-def]
    return GenerationStore(
        lancedb_uri=str(tmp_path / "lancedb"),
        table_name="t",
        bm25_path=tmp_path / "bm25",
        dimensions=8,
    )


def test_a_batch_that_fails_for_good_fails_only_its_documents(tmp_path) -> None:
    """max_retries 1: the first request (one in flight at the start) fails twice, so the
    first batch runs out; the other batches and their documents go through."""
    docs = [
        SourceDocument(
            id=i,
            filename=f"d{i}.jsonl",
            read=lambda i=i: "\n".join(
                json.dumps({"id": f"{i}-{r}", "text": f"doc {i} record {r} text"})
                for r in range(10)
            ).encode(),
        )
        for i in range(1, 7)
    ]
    store = _store(tmp_path)
    with EmbeddingServer(dims=8) as server:
        server.script.extend([Reply(500), Reply(500)])
        embedder = _embedder(server, max_retries=1, start_batch_items=20, max_batch_items=20)
        embedder.backoff = lambda attempt, retry_after: 0.0  # type: ignore[method-assign]
        result = run_pipeline(
            documents=docs,
            embedder=embedder,
            store=store,
            chunker=Chunker(embedder.tokenizer, size=64, overlap=0),
        )
    assert sorted(result.failed) == [1, 2]  # the first 20 chunks: documents 1 and 2
    assert "could not embed" in result.failed[1] and "after 2 attempts" in result.failed[1]
    assert sorted(result.indexed) == [3, 4, 5, 6]
    assert store.vectors.count() == 40


def test_several_batches_running_out_in_a_row_end_the_job(tmp_path) -> None:
    docs = [
        SourceDocument(id=i, filename=f"d{i}.txt", read=lambda i=i: f"document {i}".encode())
        for i in range(1, 6)
    ]
    store = _store(tmp_path)
    with EmbeddingServer(dims=8) as server:
        server.script.extend([Reply(503)] * 20)
        embedder = _embedder(server, max_retries=1, start_batch_items=1, max_batch_items=1)
        embedder.backoff = lambda attempt, retry_after: 0.0  # type: ignore[method-assign]
        with pytest.raises(EmbeddingError, match="after 2 attempts"):
            run_pipeline(
                documents=docs,
                embedder=embedder,
                store=store,
                chunker=Chunker(embedder.tokenizer, size=64, overlap=0),
            )
