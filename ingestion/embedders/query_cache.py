"""Query vectors kept per process: the same text for the same model needs no model call."""

from __future__ import annotations

import threading
from collections import OrderedDict

from ragstudio.core.types import Embedder, Vector


class QueryEmbeddingCache:
    """Query vectors by (model fingerprint, text), least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Vector] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, embedder: Embedder, text: str) -> Vector:
        key = (embedder.fingerprint, text)
        with self._lock:
            vector = self._items.get(key)
            if vector is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return vector
            self.misses += 1
        vector = embedder.embed_batch([text])[0]
        if self.size > 0:
            with self._lock:
                self._items[key] = vector
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return vector

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0
