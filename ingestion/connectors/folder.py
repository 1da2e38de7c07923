"""A folder on the server, under one of the roots the operator allows; files by pattern,
changes by modification time and size. Hidden files are skipped; a symbolic link that
leads out of the folder is refused."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingestion.connectors.base import ConfigReader, ConnectorError, Fetched, Item, ItemError, Limits


def within(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def allowed_folder(raw: str, limits: Limits) -> Path:
    """The folder ``raw`` names, resolved, if it lies under an allowed root."""
    if not raw:
        raise ConnectorError("'path' is required")
    roots = tuple(r.resolve() for r in limits.folder_roots)
    if not roots:
        raise ConnectorError("no folder is allowed here (RAGSTUDIO_SOURCE_FOLDER_ROOTS is empty)")
    try:
        path = Path(raw).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise ConnectorError(f"no such folder: {raw}") from None
    if not path.is_dir():
        raise ConnectorError(f"not a folder: {raw}")
    if not within(path, roots):
        allowed = ", ".join(str(r) for r in roots)
        raise ConnectorError(f"{raw} is outside the folders allowed here ({allowed})")
    return path


def patterns(reader: ConfigReader) -> list[str]:
    found = reader.texts("include", max_items=50) or ["*"]
    for pattern in found:
        if len(pattern) > 200:
            raise ConnectorError("a pattern in 'include' is at most 200 characters")
    return found


def included(relative: str, include: list[str]) -> bool:
    """Shell patterns against the path relative to the source (``*`` crosses folders)."""
    return any(fnmatch.fnmatchcase(relative, p) for p in include)


class FolderConnector:
    kind = "folder"

    def __init__(self, root: Path, include: list[str], limits: Limits) -> None:
        self.root, self.include, self.limits = root, include, limits

    @classmethod
    def from_config(cls, config: dict[str, Any], limits: Limits) -> FolderConnector:
        reader = ConfigReader(config)
        root = allowed_folder(reader.text("path", ""), limits)
        include = patterns(reader)
        reader.done()
        return cls(root, include, limits)

    def items(self) -> Iterator[Item]:
        if not self.root.is_dir():
            raise ConnectorError(f"the folder {self.root} is gone")
        count = 0
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(folder) / name
                relative = path.relative_to(self.root).as_posix()
                if not included(relative, self.include):
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue  # vanished, or a dangling link
                count += 1
                if count > self.limits.max_items:
                    raise ConnectorError(f"more than {self.limits.max_items:,} files")
                yield Item(relative, f"{stat.st_mtime_ns}:{stat.st_size}", name)

    def fetch(self, item: Item, known: str) -> Fetched | None:
        if item.fingerprint and item.fingerprint == known:
            return None
        path = (self.root / item.key).resolve()
        if not within(path, (self.root,)):
            raise ItemError("a symbolic link out of the folder: refused")
        try:
            if path.stat().st_size > self.limits.max_bytes:
                raise ItemError(f"file too large: over {self.limits.max_bytes:,} bytes (the limit)")
            with open(path, "rb") as fh:
                data = fh.read(self.limits.max_bytes + 1)
        except OSError as exc:
            raise ItemError(f"cannot read it: {exc.strerror or exc}") from None
        if len(data) > self.limits.max_bytes:
            raise ItemError(f"file too large: over {self.limits.max_bytes:,} bytes (the limit)")
        return Fetched(data, item.fingerprint)
