"""A prefix of an S3-compatible bucket (AWS, MinIO, Ceph): objects by pattern, changes by
modification time and size. Credentials are never stored: the source names the
environment variables that hold them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ingestion.connectors.base import ConfigReader, ConnectorError, Fetched, Item, ItemError, Limits
from ingestion.connectors.fetch import resolve_public
from ingestion.connectors.folder import included, patterns
from search.stores.objects import ObjectStore, ObjectStoreError, storage_options_items

ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _env(reader: ConfigReader, name: str) -> str:
    """The value of the environment variable the setting names ("" when not set)."""
    variable = reader.text(name, "", max_length=100)
    if variable and not set(variable) <= ENV_NAME_CHARS:
        raise ConnectorError(f"{name!r} names an environment variable: A-Z, 0-9 and _ only")
    if variable and variable not in os.environ:
        raise ConnectorError(f"the environment variable {variable} ({name}) is not set")
    return os.environ.get(variable, "") if variable else ""


class S3Connector:
    kind = "s3"

    def __init__(self, store: ObjectStore, include: list[str], limits: Limits) -> None:
        self.store, self.include, self.limits = store, include, limits

    @classmethod
    def from_config(cls, config: dict[str, Any], limits: Limits) -> S3Connector:
        reader = ConfigReader(config)
        uri = reader.text("uri", "")
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConnectorError("'uri' is s3://bucket/prefix")
        options: dict[str, str] = {}
        endpoint = reader.text("endpoint", "", max_length=500)
        if endpoint:
            url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ConnectorError("'endpoint' is an http(s) address")
            try:  # the server will connect there: an SSRF attempt until proven otherwise
                resolve_public(
                    url.hostname, url.port or (443 if url.scheme == "https" else 80), limits
                )
            except ItemError as exc:
                raise ConnectorError(f"endpoint: {exc}") from None
            options["aws_endpoint"] = f"{url.scheme}://{url.netloc}"
            if url.scheme == "http":
                options["allow_http"] = "true"
        region = reader.text("region", "", max_length=50)
        if region:
            options["aws_region"] = region
        key_id, secret = _env(reader, "access_key_env"), _env(reader, "secret_key_env")
        if key_id:
            options["aws_access_key_id"] = key_id
            options["aws_secret_access_key"] = secret
        include = patterns(reader)
        reader.done()
        return cls(ObjectStore(uri.rstrip("/"), storage_options_items(options)), include, limits)

    def items(self) -> Iterator[Item]:
        try:
            listing = self.store.list_info()
        except ObjectStoreError as exc:
            raise ConnectorError(str(exc)) from None
        if len(listing) > self.limits.max_items:
            raise ConnectorError(f"more than {self.limits.max_items:,} objects")
        for key in sorted(listing):
            size, mtime_ns = listing[key]
            name = key.rsplit("/", 1)[-1]
            if name and not name.startswith(".") and included(key, self.include):
                yield Item(key, f"{mtime_ns}:{size}", name)

    def fetch(self, item: Item, known: str) -> Fetched | None:
        if item.fingerprint and item.fingerprint == known:
            return None
        size = int(item.fingerprint.rsplit(":", 1)[-1] or 0)
        if size > self.limits.max_bytes:
            raise ItemError(f"object too large: over {self.limits.max_bytes:,} bytes (the limit)")
        try:
            data = self.store.get_bytes(item.key)
        except ObjectStoreError as exc:
            raise ItemError(str(exc)) from None
        if data is None:
            raise ItemError("the object is gone")
        return Fetched(data, item.fingerprint)
