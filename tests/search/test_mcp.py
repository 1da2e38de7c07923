"""The MCP server (issue 26, item 3), driven with the official `mcp` SDK's client: over
streamable HTTP against a live server with bearer keys, and over stdio as a local
assistant starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from ingestion.jobs import run_job_and_queue
from knowledge_bases.models import ApiToken
from tests.factories import make_kb, make_user, upload

ROOT = Path(__file__).resolve().parents[2]
TIDES = (
    b"Spring tides happen near the new and full moon. Neap tides happen at the quarter "
    b"moons, when the sun and the moon pull at right angles."
)


async def _session_calls(session: ClientSession) -> dict[str, Any]:
    init = await session.initialize()
    tools = await session.list_tools()
    kbs = await session.call_tool("list_knowledge_bases", {})
    found = await session.call_tool(
        "search", {"query": "neap tides quarter moon", "knowledge_base": "tides", "limit": 3}
    )
    out: dict[str, Any] = {"server": init.server_info.name, "tools": tools.tools, "kbs": kbs}
    out["search"] = found
    if not found.is_error:
        hit = found.structured_content["results"][0]
        out["context"] = await session.call_tool(
            "get_chunk_context",
            {
                "knowledge_base": "tides",
                "document_id": hit["citation"]["document_id"],
                "chunk_id": hit["chunk_id"],
            },
        )
        out["document"] = await session.call_tool(
            "get_document",
            {"knowledge_base": "tides", "document_id": hit["citation"]["document_id"]},
        )
    out["missing"] = await session.call_tool("search", {"query": "x", "knowledge_base": "not-mine"})
    return out


def _http(url: str, key: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {key}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await _session_calls(session)

    return anyio.run(run)


def _check(out: dict[str, Any]) -> None:
    assert out["server"] == "RAG Studio"
    by_name = {t.name: t for t in out["tools"]}
    assert set(by_name) == {"list_knowledge_bases", "search", "get_document", "get_chunk_context"}
    assert all(t.annotations.read_only_hint for t in by_name.values())
    assert by_name["search"].output_schema is not None
    refs = [kb["ref"] for kb in out["kbs"].structured_content["result"]]
    assert refs == ["tides"]
    results = out["search"].structured_content["results"]
    assert "Neap tides" in results[0]["content"]
    assert results[0]["citation"]["filename"] == "tides.txt"
    context = out["context"].structured_content
    assert context["chunk"]["chunk_id"] == results[0]["chunk_id"]
    assert "Neap tides" in out["document"].structured_content["text"]
    assert out["missing"].is_error  # a tool error, not a protocol error
    assert "not found" in out["missing"].content[0].text


@pytest.mark.django_db(transaction=True)
def test_mcp_over_streamable_http_with_the_sdk_client(live_server) -> None:  # type: ignore[no-untyped-def]
    alice = make_user("alice")
    kb = make_kb(alice, "tides")
    run_job_and_queue(upload(kb, [("tides.txt", TIDES)]).job.pk)
    make_kb(make_user("bob"), "not-mine")
    _row, key = ApiToken.issue(user=alice, name="claude", scope="read")
    _check(_http(f"{live_server.url}/mcp", key))
    # A key limited to another knowledge base sees none of these; no key is a 401.
    other = make_kb(alice, "other")
    _row, limited = ApiToken.issue(user=alice, name="limited", knowledge_bases=[other])
    narrowed = _http(f"{live_server.url}/mcp", limited)
    assert [kb["ref"] for kb in narrowed["kbs"].structured_content["result"]] == ["other"]
    assert narrowed["search"].is_error
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{live_server.url}/mcp", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401


@pytest.mark.subprocess
def test_mcp_over_stdio_as_a_local_assistant_starts_it(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RAGSTUDIO_DATA_DIR": str(tmp_path / "data"),
        "DJANGO_SETTINGS_MODULE": "ragstudio.settings",
        "RAGSTUDIO_PRELOAD_MODELS": "0",
        "RAGSTUDIO_LOG_LEVEL": "WARNING",
    }
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "tides.txt").write_bytes(TIDES)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    script = (
        "from django.contrib.auth.models import User; "
        "User.objects.create_user('ops', password='x', is_staff=True)"
    )
    subprocess.run([*manage, "shell", "-c", script], env=env, check=True, capture_output=True)
    subprocess.run(
        [*manage, "ingest", "--kb", "tides", "--create", str(folder)],
        env=env,
        check=True,
        capture_output=True,
    )
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "manage.py"), "mcp", "--stdio", "--user", "ops"],
        env=env,
        cwd=str(ROOT),
    )

    async def run() -> dict[str, Any]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            return await _session_calls(session)

    out = anyio.run(run)
    assert out["server"] == "RAG Studio"
    assert [kb["ref"] for kb in out["kbs"].structured_content["result"]] == ["tides"]
    assert "Neap tides" in out["search"].structured_content["results"][0]["content"]
    assert out["missing"].is_error
    refused = subprocess.run(
        [*manage, "mcp", "--stdio", "--key", "rs_wrong"], env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "valid API key" in refused.stderr
