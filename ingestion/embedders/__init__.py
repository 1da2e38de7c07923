"""Embedding providers (see ``catalog`` for the specs that name them), built from a spec
and a configuration, one loaded model per process and spec."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestion.embedders.catalog import (
    LOCAL_PROVIDERS,
    EmbedderInfo,
    EmbedderSpec,
    EmbedderSpecError,
    describe,
    parse_spec,
)
from ragstudio.core.types import Embedder

__all__ = [
    "LOCAL_PROVIDERS",
    "EmbedderConfig",
    "EmbedderInfo",
    "EmbedderSpec",
    "EmbedderSpecError",
    "build_embedder",
    "describe",
    "get_embedder",
    "parse_spec",
]


@dataclass(frozen=True)
class EmbedderConfig:
    model_dir: Path
    threads: int | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = ""
    openai_dimensions: int | None = None
    openai_timeout: float = 60.0
    openai_max_retries: int = 6
    openai_max_concurrency: int = 8
    openai_max_batch_items: int = 256
    openai_requests_per_minute: int = 0
    openai_tokens_per_minute: int = 0
    start_batch_items: int = 32

    @classmethod
    def from_settings(cls, cfg: Mapping[str, Any]) -> EmbedderConfig:
        """From settings.RAGSTUDIO (or any mapping with its keys)."""
        return cls(
            model_dir=Path(cfg["MODEL_DIR"]),
            threads=cfg["EMBED_THREADS"] or None,
            openai_base_url=cfg["OPENAI_BASE_URL"],
            openai_api_key=cfg["OPENAI_API_KEY"],
            openai_dimensions=cfg["OPENAI_DIMENSIONS"] or None,
            openai_timeout=cfg["OPENAI_TIMEOUT"],
            openai_max_retries=cfg["OPENAI_MAX_RETRIES"],
            openai_max_concurrency=cfg["OPENAI_MAX_CONCURRENCY"],
            openai_max_batch_items=cfg["OPENAI_MAX_BATCH_ITEMS"],
            openai_requests_per_minute=cfg["OPENAI_REQUESTS_PER_MINUTE"],
            openai_tokens_per_minute=cfg["OPENAI_TOKENS_PER_MINUTE"],
            start_batch_items=cfg["EMBED_BATCH_SIZE"],
        )


def build_embedder(spec: str | EmbedderSpec, config: EmbedderConfig) -> Embedder:
    # The providers import numpy, onnxruntime, fastembed or openai: only the one asked for.
    parsed = spec if isinstance(spec, EmbedderSpec) else parse_spec(spec)
    if parsed.provider == "local":
        from ingestion.embedders.local import LocalEmbedder

        return LocalEmbedder.bundled(config.model_dir, threads=config.threads)
    if parsed.provider == "local-fast":
        from ingestion.embedders.local import FastLocalEmbedder

        return FastLocalEmbedder.build(config.model_dir, threads=config.threads)
    if parsed.provider == "fastembed":
        from ingestion.embedders.local import LocalEmbedder

        return LocalEmbedder.from_fastembed(
            parsed.model, cache_dir=config.model_dir / "fastembed", threads=config.threads
        )
    from ingestion.embedders.openai_compat import OpenAICompatibleEmbedder

    return OpenAICompatibleEmbedder(
        model=parsed.model,
        base_url=config.openai_base_url,
        api_key=config.openai_api_key,
        dimensions=parsed.dimensions or config.openai_dimensions,
        timeout=config.openai_timeout,
        max_retries=config.openai_max_retries,
        max_concurrency=config.openai_max_concurrency,
        max_batch_items=config.openai_max_batch_items,
        requests_per_minute=config.openai_requests_per_minute,
        tokens_per_minute=config.openai_tokens_per_minute,
        start_batch_items=config.start_batch_items,
    )


@functools.lru_cache(maxsize=8)
def get_embedder(spec: str, config: EmbedderConfig) -> Embedder:
    """One loaded model per process, spec and configuration (loading costs a second or
    more; a loaded model is shared by the threads of the process)."""
    return build_embedder(spec, config)
