"""local-fast: the bundled model's fused int8 build (ingestion/embedders/fast_model.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingestion.embedders import describe, parse_spec
from ingestion.embedders.fast_model import FAST_BUILD
from tests.helpers import DATA

ROOT = Path(__file__).resolve().parents[2]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fast_build_matches_the_reference_vectors(fast_embedder) -> None:
    reference = json.loads((DATA / "minilm-reference.json").read_text())
    vectors = fast_embedder.embed_batch(reference["sentences"])
    expected = np.asarray(reference["embeddings"], dtype=np.float32)
    assert vectors.shape == (8, 384)
    assert cosine(vectors, expected).min() >= 0.99, cosine(vectors, expected)


def test_short_inputs_keep_the_exact_vectors(fast_embedder, embedder) -> None:
    """FINDINGS: int8 activations cost the most on very short inputs (0.97-0.99 cosine);
    those go through the fused fp32 graph, in any batch they arrive in."""
    short = ["", "ok", "insulin", "https://example.com/docs/getting-started?lang=en"]
    long = ["Mitochondria produce ATP through oxidative phosphorylation in the cell. " * 6]
    mixed = fast_embedder.embed_batch([long[0], *short])
    exact = embedder.embed_batch(short)
    assert cosine(mixed[1:], exact).min() >= 0.999, cosine(mixed[1:], exact)
    alone = fast_embedder.embed_batch(short)
    assert np.allclose(alone, mixed[1:], atol=1e-5)
    assert cosine(mixed[:1], embedder.embed_batch(long)).min() >= 0.99


def test_runs_give_fastembeds_vectors_in_the_batchs_order(fast_embedder) -> None:
    """embed_batch tokenises a batch once and runs the sessions fastembed loaded on runs of
    texts of similar length: a text alone gets the very vector fastembed's own embed gives,
    and in a mixed batch every row is its own text's vector (in the order given)."""
    topics = [
        "insulin resistance and obesity in adults",
        "the orbit of Jupiter's moons",
        "compiling Rust for embedded boards",
        "medieval trade routes across the Baltic",
        "how sourdough starters ferment",
        "tax law for small partnerships",
        "migrating birds and magnetic fields",
        "sorting algorithms on linked lists",
    ]
    texts = [
        f"A report on {topic}, part {i}. " * (3 + 5 * i % 11) for i, topic in enumerate(topics)
    ] + ["ok"]
    for text, model in ((texts[1], fast_embedder._model), (texts[-1], fast_embedder._exact)):
        theirs = np.asarray(list(model.embed([text])), dtype=np.float32)
        assert np.allclose(fast_embedder.embed_batch([text]), theirs, atol=1e-5)
    alone = np.vstack([fast_embedder.embed_batch([t]) for t in texts])
    batch = fast_embedder.embed_batch(texts)
    # int8 activations depend a little on the run a text shares (FINDINGS: ~0.997).
    assert cosine(batch, alone).min() >= 0.99, cosine(batch, alone)
    assert batch.shape == (len(texts), 384)


def test_a_forked_worker_embeds_with_sessions_of_its_own_threads(fast_embedder) -> None:
    """A worker cluster forks its workers: the runs' thread pool of the parent has no
    threads in the child, which must make its own instead of waiting forever."""
    import multiprocessing

    texts = [
        f"Paragraph {i} on tidal energy and the moon's pull on the sea. " * 8 for i in range(12)
    ]
    here = fast_embedder.embed_batch(texts)  # the parent's pool exists before the fork
    assert len(fast_embedder._sessions) == 2

    def child(conn: Any) -> None:
        conn.send(fast_embedder.embed_batch(texts))
        conn.close()

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=child, args=(send,))
    process.start()
    try:
        got = receive.recv() if receive.poll(120) else None
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    assert got is not None, "the forked child never answered"
    assert np.allclose(got, here, atol=1e-5)


def test_the_stream_gives_each_texts_vector_in_order_and_stops_on_cancel(
    fast_embedder, monkeypatch
) -> None:
    """The pipeline's path (embed_stream): items read a group at a time, the next group
    queued before this one is awaited; the groups come back whole, in order, each row the
    vector embed_batch gives for that group (the same runs). Cancelling stops the reading
    and drops the runs not finished."""
    import threading

    from ragstudio.core.types import StreamingEmbedder

    assert isinstance(fast_embedder, StreamingEmbedder)
    assert fast_embedder.throttle_stats() is None
    monkeypatch.setattr(fast_embedder, "stream_group", 10)
    texts = [
        "ok" if i % 7 == 0 else f"Note {i} on soil carbon and crop rotation. " * (1 + i % 9)
        for i in range(45)
    ]
    read: list[int] = []

    def items():  # type: ignore[no-untyped-def]
        for i, text in enumerate(texts):
            read.append(i)
            yield text, 0

    got = list(fast_embedder.embed_stream(items()))
    assert [(start, end) for start, end, _ in got] == [
        (s, min(s + 10, 45)) for s in range(0, 45, 10)
    ]
    for start, end, vectors in got:
        assert np.allclose(vectors, fast_embedder.embed_batch(texts[start:end]), atol=1e-6)

    cancel = threading.Event()
    read.clear()
    seen = []
    for start, end, _ in fast_embedder.embed_stream(items(), cancel=cancel):
        seen.append((start, end))
        cancel.set()
    # Groups 1 and 2 were queued before group 1 came back; group 2 comes back only if its
    # runs had finished, and nothing was read after cancelling.
    assert seen in ([(0, 10)], [(0, 10), (10, 20)]), seen
    assert read == list(range(20)), read


def test_fast_build_is_its_own_embedder(fast_embedder, embedder) -> None:
    assert parse_spec("local-fast").provider == "local-fast"
    assert describe("local-fast").dimensions == 384
    assert fast_embedder.fingerprint.startswith("local-fast:all-MiniLM-L6-v2:")
    assert fast_embedder.fingerprint != embedder.fingerprint
    assert fast_embedder.tokenizer.count(["a few words"]) == embedder.tokenizer.count(
        ["a few words"]
    )


@pytest.mark.subprocess
def test_concurrent_processes_build_it_once_and_the_bytes_are_reproducible(
    fast_embedder, model_root, tmp_path
) -> None:
    """Two processes asking for the build on a fresh model directory at once: one builds,
    the other waits on the lock; both load the result. The bytes equal the session's
    build made in another directory (the recipe has no randomness). An older build's files
    there (an upgrade) are removed once the new one is built."""
    older = tmp_path / "models" / f"all-MiniLM-L6-v2-fast{FAST_BUILD - 1}-1.0.0"
    for directory in (older, older.with_name(older.name + "-exact")):
        directory.mkdir(parents=True)
        (directory / "model.onnx").write_bytes(b"an older build")
    script = (
        "import sys; from pathlib import Path;"
        "from ingestion.embedders.local import prepare_fast_models;"
        "fast, exact = prepare_fast_models(Path(sys.argv[1]));"
        "print(fast / 'model.onnx')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "models")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _out, err in outputs]
    built = {Path(out.strip()) for out, _err in outputs}
    assert len(built) == 1
    (model,) = built
    leftovers = [p.name for p in model.parent.parent.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == [] and not list(model.parent.parent.rglob(".fast-build-*"))
    session_build = model_root / model.parent.name / "model.onnx"
    assert model.read_bytes() == session_build.read_bytes()
    assert not older.exists() and not older.with_name(older.name + "-exact").exists()
    assert list(model.parent.parent.glob("all-MiniLM-L6-v2-int8-*/model.onnx"))  # kept
