"""Opening a tantivy index, and the one way anything is written to one here: a batch of
adds and deletes under one writer, committed whole or rolled back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragstudio.core import languages

WRITER_HEAP_BYTES = 64 * 1024 * 1024


def open_or_create(path: Path, schema: Callable[[], Any]) -> Any:
    """The index at ``path`` with the schema it was built with, or a new, empty one; the
    analysers its text fields name (a language's stemmer) registered on it."""
    import tantivy

    if (path / "meta.json").exists():
        index = tantivy.Index.open(str(path))
    else:
        path.mkdir(parents=True, exist_ok=True)
        index = tantivy.Index(schema(), path=str(path))  # writes meta.json
    for name in _tokenizers(json.loads((path / "meta.json").read_text())):
        analyzer = languages.analyzer(name)
        if analyzer is not None:
            index.register_tokenizer(name, analyzer)
    return index


def _tokenizers(meta: dict[str, Any]) -> set[str]:
    return {
        str(((field.get("options") or {}).get("indexing") or {}).get("tokenizer") or "")
        for field in meta.get("schema", [])
    } - {""}


@contextmanager
def write_batch(index: Any) -> Iterator[Any]:
    """A writer for one batch: committed when the block ends, rolled back if it raises;
    merges are waited for and the index reloaded, so the next search sees the batch.
    tantivy allows one writer per index across processes: holding it for one batch only
    lets other processes write between our batches."""
    writer = index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
    try:
        yield writer
        writer.commit()
    except BaseException:
        writer.rollback()
        raise
    finally:
        writer.wait_merging_threads()
    index.reload()


def delete_documents(index: Any, document_ids: Any) -> None:
    """Remove every indexed row of these documents."""
    with write_batch(index) as writer:
        for doc in document_ids:
            writer.delete_documents_by_term("document_id", int(doc))
