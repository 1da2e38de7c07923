"""Objects under one prefix of an S3-compatible bucket (AWS S3, MinIO, Ceph, moto), through
pyarrow's S3 filesystem (pyarrow is already here for LanceDB: no extra client library).

Where the hosts of a scaled-out installation keep what they share besides the database:
LanceDB's tables (LanceDB talks to the bucket itself), tantivy's committed files
(``bm25``) and the uploaded documents. A PUT of one object is atomic: readers see the
old object or the new one, never a part."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class ObjectStoreError(RuntimeError):
    """The object store could not be reached or refused a request."""


def storage_options_items(options: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Options as a hashable, ordered tuple (store locations are dictionary keys)."""
    return tuple(sorted(options.items()))


@dataclass(frozen=True)
class ObjectStore:
    """``uri``: ``s3://bucket/prefix``; ``options``: LanceDB's storage options
    (``aws_endpoint``, ``aws_region``, ``aws_access_key_id``, ``aws_secret_access_key``,
    ``allow_http``), so one setting configures both."""

    uri: str
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        parsed = urlparse(self.uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"not an s3://bucket/prefix URI: {self.uri!r}")

    @property
    def root(self) -> str:
        parsed = urlparse(self.uri)
        return f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")

    def child(self, *parts: str) -> ObjectStore:
        """The store of a prefix below this one."""
        return ObjectStore("/".join([self.uri.rstrip("/"), *parts]), self.options)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def fs(self) -> Any:
        return _filesystem(self.options)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            with self.fs().open_output_stream(self._path(key)) as out:
                out.write(data)
        except OSError as exc:
            raise ObjectStoreError(f"could not write {self._path(key)}: {exc}") from exc

    def put_file(self, key: str, local: Path) -> None:
        try:
            with open(local, "rb") as source, self.fs().open_output_stream(self._path(key)) as out:
                while block := source.read(1 << 20):
                    out.write(block)
        except OSError as exc:
            raise ObjectStoreError(f"could not write {self._path(key)}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes | None:
        """The object's content, or None when there is no such object."""
        import pyarrow.fs as pafs

        try:
            with self.fs().open_input_stream(self._path(key)) as source:
                return bytes(source.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            info = self.fs().get_file_info(self._path(key))
            if info.type == pafs.FileType.NotFound:
                return None
            raise ObjectStoreError(f"could not read {self._path(key)}: {exc}") from exc

    def get_file(self, key: str, local: Path) -> bool:
        """Download to ``local`` (atomically: a temp file renamed); False when missing."""
        data = self.get_bytes(key)
        if data is None:
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{threading.get_ident()}.part")
        tmp.write_bytes(data)
        tmp.replace(local)
        return True

    def list(self, prefix: str = "") -> dict[str, int]:
        """Keys (relative to this store) and sizes of the objects under ``prefix``."""
        return {key: size for key, (size, _mtime) in self.list_info(prefix).items()}

    def list_info(self, prefix: str = "") -> dict[str, tuple[int, int]]:
        """Keys (relative to this store) of the objects under ``prefix``, with their size
        and modification time (nanoseconds)."""
        import pyarrow.fs as pafs

        base = self._path(prefix).rstrip("/")
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        try:
            infos = self.fs().get_file_info(selector)
        except OSError as exc:
            raise ObjectStoreError(f"could not list {base}: {exc}") from exc
        start = len(self.root) + 1
        return {
            info.path[start:]: (int(info.size or 0), int(info.mtime_ns or 0))
            for info in infos
            if info.type == pafs.FileType.File
        }

    def delete(self, key: str) -> None:
        try:
            self.fs().delete_file(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ObjectStoreError(f"could not delete {self._path(key)}: {exc}") from exc

    def delete_tree(self, prefix: str = "") -> None:
        """Every object under ``prefix``; what is already gone is no error."""
        import pyarrow.fs as pafs

        base = self._path(prefix).rstrip("/")
        try:
            if self.fs().get_file_info(base).type != pafs.FileType.NotFound:
                self.fs().delete_dir(base)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ObjectStoreError(f"could not delete {base}: {exc}") from exc


_FILESYSTEMS: dict[tuple[tuple[str, str], ...], Any] = {}
_FILESYSTEMS_LOCK = threading.Lock()


def _filesystem(options: tuple[tuple[str, str], ...]) -> Any:
    """One pyarrow S3 filesystem per configuration and process (it pools connections)."""
    import pyarrow.fs as pafs

    with _FILESYSTEMS_LOCK:
        found = _FILESYSTEMS.get(options)
        if found is None:
            given = dict(options)
            kwargs: dict[str, Any] = {"allow_bucket_creation": False}
            endpoint = given.get("aws_endpoint", "")
            if endpoint:
                parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
                kwargs["endpoint_override"] = parsed.netloc
                kwargs["scheme"] = parsed.scheme or "https"
            if given.get("aws_region"):
                kwargs["region"] = given["aws_region"]
            if given.get("aws_access_key_id"):
                kwargs["access_key"] = given["aws_access_key_id"]
                kwargs["secret_key"] = given.get("aws_secret_access_key", "")
            found = _FILESYSTEMS[options] = pafs.S3FileSystem(**kwargs)
        return found
