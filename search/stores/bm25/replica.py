"""A generation's tantivy indexes (chunks, and ``passages/`` beside them) shared by every
host through the object store: tantivy itself stays on local disk, which each host keeps
as a cache.

Publishing (the one writer of a generation, after a local commit): upload the segment
files the store lacks, then ``version.json``, one object holding the version number and
both indexes' ``meta.json``. Segment files are immutable and named by segment, and one PUT
is atomic, so a reader that has read version N finds every file N refers to.

Syncing (any host, before it searches or writes): when the version it holds is older than
the one asked for (the generation row's, for a search; the store's latest, for a writer),
download the files the new metas refer to, then write the metas, passages first (a
passage seen has its chunks), and only then let tantivy reload. A reader therefore sees the
old index or the new one, never half of one.

Files no version refers to any more (segments merged away) are deleted from the store once
two newer versions were published, so a reader still fetching the previous version finds
its files; a reader that loses the race retries from the newest version."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from search.stores.objects import ObjectStore, ObjectStoreError

VERSION_FILE = "version.json"
INDEXES = ("passages", "")  # the passages' meta is written first (see the module doc)
SYNC_ATTEMPTS = 4
# Written by tantivy or by us; never uploaded as segment data.
LOCAL_ONLY = {"meta.json", ".managed.json", ".tantivy-meta.lock", ".tantivy-writer.lock"}


def _referenced(meta: dict) -> set[str]:
    """The file-name prefixes (segment ids without dashes) a meta.json refers to."""
    return {str(s["segment_id"]).replace("-", "") for s in meta.get("segments", [])}


def _local_files(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {
        p.name
        for p in directory.iterdir()
        if p.is_file()
        and p.name not in LOCAL_ONLY
        and not p.name.startswith(".")
        and p.name != VERSION_FILE
    }


class Bm25Replica:
    def __init__(self, path: Path, remote: ObjectStore) -> None:
        self.path = path
        self.remote = remote
        self._lock = threading.Lock()
        self._uploaded: set[str] | None = None  # keys known to be in the store
        # Files each published version refers to (the last three), for deletion.
        self._history: list[set[str]] = []
        self.on_publish: Callable[[int], None] | None = None

    # --- versions ------------------------------------------------------------------

    def local_version(self) -> int:
        try:
            return int(json.loads((self.path / VERSION_FILE).read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def remote_state(self) -> dict | None:
        data = self.remote.get_bytes(VERSION_FILE)
        return None if data is None else json.loads(data)

    # --- readers -------------------------------------------------------------------

    def sync(self, min_version: int | None = None) -> bool:
        """Bring the local copy up to the store's newest version when it holds less than
        ``min_version`` (None: whatever the store has now). True when files changed."""
        if min_version is not None and self.local_version() >= min_version:
            return False
        with self._lock:
            for _attempt in range(SYNC_ATTEMPTS):
                state = self.remote_state()
                if state is None or int(state["version"]) <= self.local_version():
                    return False
                if self._apply(state):
                    return True
            raise ObjectStoreError(
                f"{self.remote.uri}: files of the newest version kept disappearing"
            )

    def _apply(self, state: dict) -> bool:
        """Download what ``state`` refers to, then write its metas; False when a file it
        needs is gone (a newer version was published meanwhile: try again)."""
        listing = self.remote.list()
        for name in INDEXES:
            directory = self.path / name if name else self.path
            meta_text = state["indexes"].get(name or "chunks")
            if meta_text is None:  # never written (a generation without passages)
                continue
            meta = json.loads(meta_text)
            prefix = f"{name}/" if name else ""
            have = _local_files(directory)
            for segment in _referenced(meta):
                wanted = [
                    key[len(prefix) :] for key in listing if key.startswith(prefix + segment + ".")
                ]
                if not wanted:
                    return False
                for file in wanted:
                    if file not in have and not self.remote.get_file(
                        prefix + file, directory / file
                    ):
                        return False
        for name in INDEXES:
            meta_text = state["indexes"].get(name or "chunks")
            if meta_text is None:
                continue
            directory = self.path / name if name else self.path
            directory.mkdir(parents=True, exist_ok=True)
            _write_atomic(directory / "meta.json", meta_text)
        _write_atomic(self.path / VERSION_FILE, json.dumps({"version": state["version"]}))
        return True

    # --- the writer ----------------------------------------------------------------

    def publish(self) -> int:
        """Upload what the last local commit wrote, then the new version; returns it."""
        with self._lock:
            if self._uploaded is None:
                self._uploaded = set(self.remote.list())
            state = self.remote_state()
            version = (int(state["version"]) if state else 0) + 1
            metas: dict[str, str | None] = {}
            referenced: set[str] = set()
            for name in INDEXES:
                directory = self.path / name if name else self.path
                prefix = f"{name}/" if name else ""
                meta_path = directory / "meta.json"
                if not meta_path.exists():
                    metas[name or "chunks"] = None
                    continue
                meta_text = meta_path.read_text()
                metas[name or "chunks"] = meta_text
                segments = _referenced(json.loads(meta_text))
                for file in sorted(_local_files(directory)):
                    if file.split(".", 1)[0] not in segments:
                        continue
                    key = prefix + file
                    referenced.add(key)
                    if key not in self._uploaded:
                        self.remote.put_file(key, directory / file)
                        self._uploaded.add(key)
            self.remote.put_bytes(
                VERSION_FILE, json.dumps({"version": version, "indexes": metas}).encode()
            )
            _write_atomic(self.path / VERSION_FILE, json.dumps({"version": version}))
            self._forget_old(referenced)
        if self.on_publish is not None:
            self.on_publish(version)
        return version

    def _forget_old(self, referenced: set[str]) -> None:
        """Delete from the store the files neither this version nor the two before refer
        to (a reader still fetching one of those finds its files)."""
        self._history = [*self._history[-2:], referenced]
        if len(self._history) < 3 or self._uploaded is None:
            return
        keep = set().union(*self._history)
        for key in sorted(self._uploaded - keep - {VERSION_FILE}):
            self.remote.delete(key)
            self._uploaded.discard(key)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
