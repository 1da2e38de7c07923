from __future__ import annotations

import numpy as np
import pytest

from ingestion.embedders.openai_compat import OpenAICompatibleEmbedder
from ragstudio.core.types import EmbeddingError
from ragstudio.testing.embedding_server import EmbeddingServer, Reply, fake_vector


@pytest.fixture
def server():
    with EmbeddingServer(dims=8) as srv:
        yield srv


def _embedder(server: EmbeddingServer, sleeps: list[float], **kwargs) -> OpenAICompatibleEmbedder:
    return OpenAICompatibleEmbedder(
        model="test-embed",
        base_url=server.url,
        api_key="sk-test",
        dimensions=8,
        sleep=sleeps.append,  # record the waits instead of spending them
        rng=lambda: 0.5,
        **kwargs,
    )


def test_vectors_come_back_in_input_order(server) -> None:
    sleeps: list[float] = []
    vectors = _embedder(server, sleeps).embed_batch(["alpha", "beta", "gamma"])
    expected = np.asarray([fake_vector(t, 8) for t in ["alpha", "beta", "gamma"]], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert server.requests[0]["model"] == "test-embed"
    assert server.requests[0]["dimensions"] == 8
    assert server.headers[0]["authorization"] == "Bearer sk-test"
    assert sleeps == []


def test_429_honours_retry_after_and_counts_the_retry(server) -> None:
    server.script.extend(
        [Reply(429, {"Retry-After": "7"}), Reply(429, {"retry-after-ms": "250"}), Reply()]
    )
    sleeps: list[float] = []
    retries: list[str] = []
    vectors = _embedder(server, sleeps).embed_batch(["x"], on_retry=retries.append)
    assert vectors.shape == (1, 8)
    assert sleeps == [7.0, 0.25]
    assert retries == ["HTTP 429", "HTTP 429"]
    assert len(server.requests) == 3


def test_5xx_is_retried_with_exponential_backoff_and_jitter(server) -> None:
    server.script.extend([Reply(500), Reply(502), Reply(503), Reply()])
    sleeps: list[float] = []
    _embedder(server, sleeps, backoff_base=1.0).embed_batch(["x"])
    # base * 2**attempt, scaled by the jitter factor (0.5 + rng/2 = 0.75 here)
    assert sleeps == [0.75, 1.5, 3.0]


def test_backoff_is_capped_and_jittered_between_half_and_full() -> None:
    with EmbeddingServer() as srv:
        low = OpenAICompatibleEmbedder(
            model="m",
            base_url=srv.url,
            dimensions=8,
            rng=lambda: 0.0,
            backoff_base=1.0,
            backoff_cap=10.0,
        )
        high = OpenAICompatibleEmbedder(
            model="m",
            base_url=srv.url,
            dimensions=8,
            rng=lambda: 1.0,
            backoff_base=1.0,
            backoff_cap=10.0,
        )
    assert [low.backoff(a, None) for a in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert [high.backoff(a, None) for a in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_slow_responses_time_out_and_are_retried(server) -> None:
    server.script.extend([Reply(delay=1.5), Reply()])
    sleeps: list[float] = []
    retries: list[str] = []
    vectors = _embedder(server, sleeps, timeout=0.5).embed_batch(["slow"], on_retry=retries.append)
    assert vectors.shape == (1, 8)
    assert retries == ["timeout"]


def test_retries_run_out_with_a_job_level_error(server) -> None:
    server.script.extend([Reply(500)] * 5)
    sleeps: list[float] = []
    with pytest.raises(EmbeddingError, match="failed after 3 attempts") as info:
        _embedder(server, sleeps, max_retries=2).embed_batch(["x"])
    assert not info.value.input_rejected
    assert len(sleeps) == 2


def test_a_rejected_input_fails_only_that_batch(server) -> None:
    server.script.append(Reply(400))
    with pytest.raises(EmbeddingError, match="HTTP 400") as info:
        _embedder(server, []).embed_batch(["x"])
    assert info.value.input_rejected


def test_bad_credentials_fail_the_job_without_retrying(server) -> None:
    server.script.append(Reply(401))
    sleeps: list[float] = []
    with pytest.raises(EmbeddingError, match="refused: HTTP 401") as info:
        _embedder(server, sleeps).embed_batch(["x"])
    assert not info.value.input_rejected and sleeps == []


def test_vectors_of_the_wrong_dimension_are_refused(server) -> None:
    server.script.append(Reply(dims=5))
    with pytest.raises(EmbeddingError, match="5 dimensions, expected 8"):
        _embedder(server, []).embed_batch(["x"])


def test_unknown_model_without_dimensions_is_refused() -> None:
    with pytest.raises(EmbeddingError, match="dimensions of 'mystery' are unknown"):
        OpenAICompatibleEmbedder(model="mystery", base_url="http://127.0.0.1:9/v1")
