"""Token counting with the embedding model's own tokenizer (HF ``tokenizers``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer


class HFTokenCounter:
    """Counts content tokens (no [CLS]/[SEP], no truncation, no padding)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        # A copy: fastembed's tokenizer truncates and pads, which would hide long texts.
        self._tok = Tokenizer.from_str(tokenizer.to_str())
        self._tok.no_truncation()
        self._tok.no_padding()

    @classmethod
    def from_file(cls, path: Path | str) -> HFTokenCounter:
        return cls(Tokenizer.from_file(str(path)))

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text``."""
        return list(self._tok.encode(text, add_special_tokens=False).offsets)
