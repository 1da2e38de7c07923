"""Data passed between the pipeline stages, and the protocols of its collaborators."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector: TypeAlias = npt.NDArray[np.float32]
    Matrix: TypeAlias = npt.NDArray[np.float32]
else:
    # numpy stays out of web start-up: these names are only needed in annotations, and
    # the modules that build vectors import numpy themselves.
    Vector = Matrix = Any


class PipelineError(Exception):
    """A failure of the whole job (as opposed to one document)."""


class DocumentError(Exception):
    """One document cannot be ingested; the message says why, for a person to read."""


class EmbeddingError(PipelineError):
    """The embedder failed. When the provider rejected this input (a 400 for these texts)
    or a batch ran out of retries, only the documents in the batch fail (the pipeline ends
    the job when several batches in a row run out: the provider is down, not the input);
    otherwise (bad credentials, unknown model) the job fails."""

    def __init__(
        self, message: str, *, input_rejected: bool = False, retries_exhausted: bool = False
    ) -> None:
        super().__init__(message)
        self.input_rejected = input_rejected
        self.retries_exhausted = retries_exhausted


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text from one document, following its own structure: a heading's part, a
    PDF page, a slide, a sheet or table, an e-mail part, a JSON Lines record. Chunks never
    cross a section. Where the parser knows it, ``metadata`` says where the section lies
    (``section``: the heading path, ``slide``, ``sheet``, ``ocr``)."""

    text: str
    title: str = ""
    page: int | None = None
    record_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # A table: each line of ``text`` is a row, ``header`` the header row that every chunk
    # of it repeats, ``rows`` each line's row number (in its sheet or table), so chunks
    # are cut between rows and cite the rows they hold.
    header: str = ""
    rows: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceDocument:
    id: int
    filename: str
    read: Callable[[], bytes]
    title: str = ""
    version: int = 1  # the document's version these bytes are


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _version_part(version: int) -> str:
    # Version 1 keeps the ids chunks had before documents had versions, so stores written
    # then are still upserted, not duplicated.
    return "" if version == 1 else f"v{version}:"


def parent_id(document_id: int, first_ordinal: int, text_hash: str, version: int = 1) -> str:
    """A passage's id: deterministic like a chunk's, from a key chunk ids never use."""
    key = f"{document_id}:{_version_part(version)}p{first_ordinal}:{text_hash}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def chunk_id(document_id: int, ordinal: int, text_hash: str, version: int = 1) -> str:
    """Deterministic: the same document version, position and text always give the same
    id, so every write is an idempotent upsert; two versions of a document never share a
    row, so a new one is written beside the old one and replaces it in one step."""
    key = f"{document_id}:{_version_part(version)}{ordinal}:{text_hash}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str
    document_id: int
    ordinal: int
    text: str
    content_hash: str
    token_count: int
    title: str = ""
    page: int | None = None
    record_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # The passage this chunk belongs to (consecutive chunks of one section: a record, a
    # page, a document; see Chunker), indexed whole for BM25. Its first chunk carries its
    # text, so the passage is written with that chunk.
    parent_id: str = ""
    parent_text: str = ""
    parent_chunks: tuple[str, ...] = ()  # the passage's chunk ids, on its first chunk
    version: int = 1  # of its document

    def metadata_json(self) -> str:
        return json.dumps(self.metadata, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class EmbeddedChunk:
    chunk: Chunk
    vector: Vector
    # True when the row is known to be absent from the target store (its content hash was
    # looked up there and not found; the id contains the hash), so it can be appended.
    # False: it may be there already, and must be upserted.
    new: bool = False


@runtime_checkable
class TokenCounter(Protocol):
    def count(self, texts: Sequence[str]) -> list[int]: ...

    def offsets(self, text: str) -> list[tuple[int, int]]: ...


@runtime_checkable
class Embedder(Protocol):
    """What the pipeline needs from an embedding provider."""

    spec: str
    fingerprint: str
    dimensions: int
    max_input_tokens: int
    max_batch_items: int
    max_batch_tokens: int

    @property
    def tokenizer(self) -> TokenCounter: ...

    def embed_batch(
        self, texts: Sequence[str], *, on_retry: Callable[[str], None] | None = None
    ) -> Matrix: ...


@runtime_checkable
class StreamingEmbedder(Embedder, Protocol):
    """An embedder that sizes its own requests and keeps several in flight (remote APIs):
    it reads (text, token count) items as it needs them and yields (start, end, vectors
    or the EmbeddingError that ended that batch) for consecutive batches, in order."""

    def embed_stream(
        self,
        items: Iterable[tuple[str, int]],
        *,
        on_retry: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[int, int, Matrix | EmbeddingError]]: ...

    def throttle_stats(self) -> dict[str, object] | None: ...


# A document's version in a generation: (document id, version).
DocumentVersionKey = tuple[int, int]


@runtime_checkable
class ChunkStore(Protocol):
    """Where rows go: one ``write`` per flush of the buffered sink."""

    def write(self, rows: Sequence[EmbeddedChunk]) -> None: ...

    def delete_versions(self, keys: Sequence[DocumentVersionKey]) -> None: ...


@runtime_checkable
class VectorCache(Protocol):
    """Vectors already computed by the same model, by content hash."""

    def lookup(self, hashes: Sequence[str]) -> dict[str, Vector]: ...
