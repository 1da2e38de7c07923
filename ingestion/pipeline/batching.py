"""Token-aware embedding batches.

A batch is padded to its longest text, so mixing short and long chunks wastes model time.
Chunks are sorted by token count inside windows of 1,024, so the gain comes without
holding a whole job's documents back until the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ragstudio.core.types import Chunk


def make_batches(
    chunks: Sequence[Chunk],
    *,
    max_items: int,
    max_tokens: int,
    window: int = 1024,
) -> Iterator[list[Chunk]]:
    """Batches of at most ``max_items`` chunks whose padded size (items x longest) stays
    within ``max_tokens``; a single chunk over ``max_tokens`` goes alone."""
    if max_items < 1 or max_tokens < 1:
        raise ValueError("max_items and max_tokens must be positive")
    for start in range(0, len(chunks), window):
        ordered = sorted(chunks[start : start + window], key=lambda c: c.token_count)
        batch: list[Chunk] = []
        longest = 0
        for chunk in ordered:
            tokens = max(chunk.token_count, 1)
            padded = (len(batch) + 1) * max(longest, tokens)
            if batch and (len(batch) >= max_items or padded > max_tokens):
                yield batch
                batch, longest = [], 0
            batch.append(chunk)
            longest = max(longest, tokens)
        if batch:
            yield batch
