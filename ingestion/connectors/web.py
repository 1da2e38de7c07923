"""Web pages: a list of addresses and/or a sitemap. Every request goes through the guarded
fetcher (public addresses only, unless the operator allows more; redirects checked; sizes
capped); robots.txt is honoured; a page is read again only when the server says it
changed (ETag, Last-Modified, the sitemap's lastmod) or, failing those, when its bytes did."""

from __future__ import annotations

import hashlib
import urllib.robotparser
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.etree import ElementTree

from ingestion.connectors.base import ConfigReader, ConnectorError, Fetched, Item, ItemError, Limits
from ingestion.connectors.fetch import fetch, resolve_public

SITEMAP_DEPTH = 2  # a sitemap index, then its sitemaps
NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectorError(f"not an http(s) address: {url[:200]!r}")
    if len(url) > 2000:
        raise ConnectorError("an address is at most 2,000 characters")
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))


def _name(url: str) -> str:
    parts = urlsplit(url)
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    return (last or parts.hostname or "page")[:200]


class WebConnector:
    kind = "web"

    def __init__(self, urls: list[str], sitemap: str, limits: Limits) -> None:
        self.urls, self.sitemap, self.limits = urls, sitemap, limits
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}

    @classmethod
    def from_config(cls, config: dict[str, Any], limits: Limits) -> WebConnector:
        reader = ConfigReader(config)
        urls = [_checked_url(u) for u in reader.texts("urls", max_items=limits.max_items)]
        sitemap = reader.text("sitemap", "", max_length=2000)
        if sitemap:
            sitemap = _checked_url(sitemap)
        reader.done()
        if not urls and not sitemap:
            raise ConnectorError("give 'urls' (one or more pages) or a 'sitemap'")
        origins = {urlsplit(u)[:2] for u in [*urls, *([sitemap] if sitemap else [])]}
        for scheme, netloc in sorted(origins):
            parts = urlsplit(f"{scheme}://{netloc}")
            try:  # refused now rather than at every sync
                resolve_public(
                    parts.hostname or "", parts.port or (443 if scheme == "https" else 80), limits
                )
            except ItemError as exc:
                raise ConnectorError(str(exc)) from None
        return cls(urls, sitemap, limits)

    def items(self) -> Iterator[Item]:
        seen: set[str] = set()
        for url in self.urls:
            if url not in seen:
                seen.add(url)
                yield Item(url, "", _name(url))
        if self.sitemap:
            for url, lastmod in self._sitemap(self.sitemap, SITEMAP_DEPTH):
                if url not in seen:
                    seen.add(url)
                    if len(seen) > self.limits.max_items:
                        raise ConnectorError(f"more than {self.limits.max_items:,} pages")
                    yield Item(url, f"lastmod:{lastmod}" if lastmod else "", _name(url))

    def _sitemap(self, url: str, depth: int) -> Iterator[tuple[str, str]]:
        try:
            response = fetch(url, self.limits)
        except ItemError as exc:
            raise ConnectorError(f"sitemap: {exc}") from None
        if response.status != 200:
            raise ConnectorError(f"sitemap: {url} answered {response.status}")
        if b"<!DOCTYPE" in response.body[:2000].upper():
            raise ConnectorError("sitemap: a document type declaration is refused")
        try:
            root = ElementTree.fromstring(response.body)
        except ElementTree.ParseError as exc:
            raise ConnectorError(f"sitemap: not XML ({exc})") from None
        if root.tag == f"{NS}sitemapindex" and depth > 1:
            for entry in root.iter(f"{NS}sitemap"):
                loc = (entry.findtext(f"{NS}loc") or "").strip()
                if loc:
                    yield from self._sitemap(_checked_url(loc), depth - 1)
            return
        for entry in root.iter(f"{NS}url"):
            loc = (entry.findtext(f"{NS}loc") or "").strip()
            if loc:
                yield _checked_url(loc), (entry.findtext(f"{NS}lastmod") or "").strip()[:40]

    def _allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            parser: urllib.robotparser.RobotFileParser | None = None
            try:
                response = fetch(f"{origin}/robots.txt", self.limits)
            except ItemError:
                response = None
            if response is not None and response.status == 200:
                parser = urllib.robotparser.RobotFileParser()
                parser.parse(response.body.decode("utf-8", errors="replace").splitlines())
            self._robots[origin] = parser  # None: no robots.txt, everything allowed
        parser = self._robots[origin]
        return parser is None or parser.can_fetch(self.limits.user_agent, url)

    def fetch(self, item: Item, known: str) -> Fetched | None:
        if item.fingerprint and item.fingerprint == known:
            return None  # the sitemap's lastmod says unchanged
        if not self._allowed(item.key):
            raise ItemError("robots.txt disallows it")
        headers = {}
        if known.startswith("etag:"):
            headers["If-None-Match"] = known[5:]
        elif known.startswith("modified:"):
            headers["If-Modified-Since"] = known[9:]
        response = fetch(item.key, self.limits, headers)
        if response.status == 304:
            return None
        if response.status != 200:
            raise ItemError(f"the server answered {response.status}")
        if item.fingerprint:
            fingerprint = item.fingerprint
        elif response.headers.get("etag"):
            fingerprint = "etag:" + response.headers["etag"][:200]
        elif response.headers.get("last-modified"):
            fingerprint = "modified:" + response.headers["last-modified"][:100]
        else:
            fingerprint = "sha256:" + hashlib.sha256(response.body).hexdigest()
        if fingerprint == known:
            return None
        return Fetched(response.body, fingerprint)
