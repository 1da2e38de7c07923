"""What every kind of source is to a sync: a list of items, each with a key (its identity
in the source), a fingerprint that changes when its content does, and a way to read it.
Plain Python, no Django: a sync (ingestion/services/sources.py) compares fingerprints with
the ones it recorded and reads only what changed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol


class ConnectorError(Exception):
    """The source cannot be used (bad settings, unreachable, refused); for people."""


class ItemError(Exception):
    """One item cannot be read; the others go on."""


@dataclass(frozen=True)
class Item:
    key: str  # the item's identity in the source: a relative path, an object key, a URL
    fingerprint: str  # changes when the content changes; "" when only a read can tell
    name: str  # the file name its document gets


@dataclass(frozen=True)
class Fetched:
    data: bytes
    fingerprint: str  # what to record for the next sync


@dataclass(frozen=True)
class Limits:
    """What the operator allows sources here (from settings)."""

    max_bytes: int  # one item
    max_items: int  # one listing
    timeout: float  # seconds, one network request
    folder_roots: tuple[Path, ...] = ()  # folders (and local Git repositories) under these
    fetch_allow: tuple[str, ...] = ()  # hosts (host or host:port) or networks (CIDR) that
    # may be private, loopback or link-local addresses
    work_dir: Path | None = None  # where a source may keep a cache (a Git clone)
    user_agent: str = "RAGStudio"


class Connector(Protocol):
    kind: ClassVar[str]

    def items(self) -> Iterator[Item]:
        """Everything the source holds now (ConnectorError when it cannot be listed)."""
        ...

    def fetch(self, item: Item, known: str) -> Fetched | None:
        """The item's content, or None when ``known`` (the fingerprint recorded at the
        last sync) shows it unchanged; ItemError when this item cannot be read."""
        ...


@dataclass
class ConfigReader:
    """A source's settings, read with clear errors naming the field."""

    config: dict[str, Any]
    used: set[str] = field(default_factory=set)

    def text(self, name: str, default: str | None = None, max_length: int = 2000) -> str:
        self.used.add(name)
        value = self.config.get(name, default)
        if value is None:
            raise ConnectorError(f"{name!r} is required")
        if not isinstance(value, str) or len(value) > max_length:
            raise ConnectorError(f"{name!r} must be text of at most {max_length} characters")
        return value.strip()

    def texts(self, name: str, max_items: int = 1000) -> list[str]:
        self.used.add(name)
        value = self.config.get(name, [])
        if isinstance(value, str):
            value = [line for line in value.splitlines() if line.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConnectorError(f"{name!r} must be a list of text")
        if len(value) > max_items:
            raise ConnectorError(f"{name!r} holds at most {max_items} entries")
        return [v.strip() for v in value if v.strip()]

    def done(self) -> None:
        unknown = sorted(set(self.config) - self.used)
        if unknown:
            raise ConnectorError(f"unknown setting(s): {', '.join(unknown)}")
