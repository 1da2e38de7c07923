"""Kinds of sources a knowledge base keeps itself in sync with, each one module behind the
``Connector`` interface of ``base``: a folder on the server, an S3 prefix, web pages (a
list or a sitemap) and a Git repository."""

from __future__ import annotations

from typing import Any

from ingestion.connectors.base import (
    Connector,
    ConnectorError,
    Fetched,
    Item,
    ItemError,
    Limits,
)
from ingestion.connectors.folder import FolderConnector
from ingestion.connectors.git import GitConnector
from ingestion.connectors.s3 import S3Connector
from ingestion.connectors.web import WebConnector
from ragstudio.core.vocabulary import SOURCE_KINDS

CONNECTORS: dict[str, Any] = {
    c.kind: c for c in (FolderConnector, S3Connector, WebConnector, GitConnector)
}
assert tuple(CONNECTORS) == SOURCE_KINDS, "one connector per kind of the vocabulary"


def connector_for(kind: str, config: Any, limits: Limits) -> Connector:
    """The connector of a source's kind and settings (ConnectorError when they do not
    fit, naming the setting)."""
    if kind not in CONNECTORS:
        raise ConnectorError(f"unknown kind of source {kind!r} ({', '.join(SOURCE_KINDS)})")
    if not isinstance(config, dict):
        raise ConnectorError("a source's settings are an object")
    connector: Connector = CONNECTORS[kind].from_config(config, limits)
    return connector


__all__ = [
    "CONNECTORS",
    "SOURCE_KINDS",
    "Connector",
    "ConnectorError",
    "Fetched",
    "Item",
    "ItemError",
    "Limits",
    "connector_for",
]
