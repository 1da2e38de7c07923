"""Files of a Git repository: a local one under an allowed folder, or an https URL the
server clones (its host checked like any address a user gives; redirects off; other
protocols refused). Changes by blob id: a file whose blob is the same was not touched."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ingestion.connectors.base import ConfigReader, ConnectorError, Fetched, Item, ItemError, Limits
from ingestion.connectors.fetch import resolve_public
from ingestion.connectors.folder import allowed_folder, included, patterns

SAFE = [
    "-c",
    "protocol.allow=never",
    "-c",
    "protocol.https.allow=always",
    "-c",
    "http.followRedirects=false",
]
REF_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-")


class GitConnector:
    kind = "git"

    def __init__(
        self, repository: Path, ref: str, include: list[str], limits: Limits, url: str = ""
    ) -> None:
        self.repository, self.ref, self.include, self.limits, self.url = (
            repository,
            ref,
            include,
            limits,
            url,
        )

    @classmethod
    def from_config(cls, config: dict[str, Any], limits: Limits) -> GitConnector:
        reader = ConfigReader(config)
        source = reader.text("repository", "", max_length=1000)
        branch = reader.text("branch", "", max_length=200)
        if branch and (not set(branch) <= REF_CHARS or branch.startswith("-") or ".." in branch):
            raise ConnectorError("'branch' is a branch name")
        include = patterns(reader)
        reader.done()
        if source.startswith(("http://", "https://")) or "://" in source:
            parts = urlsplit(source)
            if parts.scheme != "https" or not parts.hostname or parts.username:
                raise ConnectorError("a repository URL is https://host/path (no other protocol)")
            try:
                resolve_public(parts.hostname, parts.port or 443, limits)
            except ItemError as exc:
                raise ConnectorError(str(exc)) from None
            if limits.work_dir is None:
                raise ConnectorError("no place to clone into")
            clone = limits.work_dir / "git" / hashlib.sha256(source.encode()).hexdigest()[:24]
            return cls(clone, branch or "HEAD", include, limits, url=source)
        return cls(allowed_folder(source, limits), branch or "HEAD", include, limits)

    def _git(self, *args: str, binary: bool = False) -> Any:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
        try:
            done = subprocess.run(
                ["git", *SAFE, *args],
                capture_output=True,
                timeout=max(self.limits.timeout * 6, 60),
                env=env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConnectorError(f"git failed: {exc}") from None
        if done.returncode != 0:
            raise ConnectorError(
                f"git {args[0]}: {done.stderr.decode(errors='replace').strip()[:300]}"
            )
        return done.stdout if binary else done.stdout.decode("utf-8", errors="replace")

    def _update_clone(self) -> str:
        """Clone (bare, shallow) or fetch the remote; the ref to list."""
        if (self.repository / "HEAD").exists():
            self._git("-C", str(self.repository), "fetch", "--depth", "1", "origin", self.ref)
            return "FETCH_HEAD"
        self.repository.parent.mkdir(parents=True, exist_ok=True)
        branch = ["--branch", self.ref] if self.ref != "HEAD" else []
        self._git("clone", "--bare", "--depth", "1", *branch, "--", self.url, str(self.repository))
        return self.ref

    def items(self) -> Iterator[Item]:
        ref = self._update_clone() if self.url else self.ref
        listing = self._git("-C", str(self.repository), "ls-tree", "-r", "-z", "--long", ref, "--")
        entries = [e for e in listing.split("\0") if e]
        if len(entries) > self.limits.max_items:
            raise ConnectorError(f"more than {self.limits.max_items:,} files")
        for entry in entries:
            meta, _, path = entry.partition("\t")
            mode, kind, blob, size = meta.split()
            name = path.rsplit("/", 1)[-1]
            if kind != "blob" or mode == "120000" or name.startswith("."):
                continue  # trees, submodules, symbolic links, hidden files
            if included(path, self.include):
                yield Item(path, f"{blob}:{size}", name)

    def fetch(self, item: Item, known: str) -> Fetched | None:
        if item.fingerprint == known:
            return None
        blob, _, size = item.fingerprint.partition(":")
        if int(size or 0) > self.limits.max_bytes:
            raise ItemError(f"file too large: over {self.limits.max_bytes:,} bytes (the limit)")
        try:
            data = self._git("-C", str(self.repository), "cat-file", "blob", blob, binary=True)
        except ConnectorError as exc:
            raise ItemError(str(exc)) from None
        return Fetched(data, item.fingerprint)
