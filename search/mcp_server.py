"""An MCP server (the official `mcp` SDK): assistants and IDE agents list knowledge bases,
search them, read documents and a chunk's neighbours. Served at `/mcp` by the app itself
(streamable HTTP, stateless, JSON answers) with bearer-key auth, and on stdio by
`manage.py mcp --stdio` for local assistants. Every tool is read-only.

The app is WSGI; the SDK's transport is ASGI. Each process runs one event loop in a thread
of its own with the SDK's session manager; a request to /mcp is authenticated by Django,
handed to that loop as an ASGI call, and its answer returned. Tools are plain functions:
the SDK runs them in worker threads, where the ORM works as anywhere else."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ingestion.services import document_get
from knowledge_bases.selectors import (
    knowledge_base_get,
    knowledge_base_ref,
    knowledge_bases_with_stats,
)
from ragstudio.auth import bearer_token, request_key_user
from ragstudio.core.errors import Conflict, RagStudioError
from ragstudio.core.vocabulary import SearchMode
from search.ranking.filters import SearchFilter
from search.ranking.results import SearchParams
from search.services import document_chunks, knowledge_base_search

_META_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True)
MAX_LIMIT = 20
DOCUMENT_TEXT_CHARS = 50_000
REQUEST_TIMEOUT = 120.0
SCOPE_USER = "ragstudio.user"

# The user of a stdio server (one user for the whole process).
_STDIO_USER: ContextVar[Any] = ContextVar("mcp_stdio_user", default=None)


class KnowledgeBaseInfo(BaseModel):
    ref: str = Field(description="What the other tools take as knowledge_base.")
    name: str
    description: str
    documents: int
    indexed: int
    language: str


class Citation(BaseModel):
    document_id: int
    filename: str
    title: str
    chunk: int = Field(description="Position of the chunk in its document, from 1.")
    page: int | None = None
    section: str | None = None
    slide: int | None = None
    sheet: str | None = None
    rows: str | None = None


class SearchResult(BaseModel):
    chunk_id: str
    score: float
    content: str
    citation: Citation


class SearchResults(BaseModel):
    knowledge_base: str
    mode: str
    results: list[SearchResult]


class ChunkText(BaseModel):
    chunk_id: str
    number: int
    text: str
    section: str | None = None
    page: int | None = None


class DocumentText(BaseModel):
    document_id: int
    title: str
    filename: str
    status: str
    chunks: int
    text: str = Field(description="Its chunks' text in order (cut at 50,000 characters).")
    truncated: bool


class ChunkContext(BaseModel):
    document_id: int
    filename: str
    chunk: ChunkText
    before: list[ChunkText]
    after: list[ChunkText]


def _user(ctx: Context) -> Any:
    stdio = _STDIO_USER.get()
    if stdio is not None:
        return stdio
    request = ctx.request_context.request
    user = request.scope.get(SCOPE_USER) if request is not None else None
    if user is None:
        raise ToolError("not authenticated")
    return user


def _kb(ctx: Context, ref: str) -> Any:
    try:
        return knowledge_base_get(slug=ref, user=_user(ctx))
    except RagStudioError as exc:
        raise ToolError(exc.message) from None


def _chunk_text(chunk: Any) -> ChunkText:
    return ChunkText(
        chunk_id=chunk.id,
        number=chunk.number,
        text=chunk.text,
        section=chunk.section,
        page=chunk.page,
    )


def build_server() -> MCPServer:
    server = MCPServer(
        name="RAG Studio",
        instructions=(
            "Search the knowledge bases of a RAG Studio installation. Call "
            "list_knowledge_bases first, then search one; get_chunk_context widens a result "
            "to its neighbours, get_document reads a whole document."
        ),
    )

    @server.tool(annotations=READ_ONLY)
    def list_knowledge_bases(ctx: Context) -> list[KnowledgeBaseInfo]:
        """The knowledge bases you can search."""
        user = _user(ctx)
        return [
            KnowledgeBaseInfo(
                ref=knowledge_base_ref(kb, user),
                name=kb.name,
                description=kb.description,
                documents=kb.document_count,  # type: ignore[attr-defined]  # annotated
                indexed=kb.indexed_count,  # type: ignore[attr-defined]
                language=kb.language,
            )
            for kb in knowledge_bases_with_stats(user).order_by("slug")
        ]

    @server.tool(annotations=READ_ONLY)
    def search(
        query: str,
        knowledge_base: str,
        ctx: Context,
        mode: SearchMode = "hybrid",
        limit: int = Field(5, ge=1, le=MAX_LIMIT),
        filters: dict[str, str | int | float | bool] | None = None,
    ) -> SearchResults:
        """Search a knowledge base: hybrid (meaning and words), vector (meaning) or
        lexical (words, BM25). Results carry their text and citation (file, chunk, page,
        section). `filters`: metadata values the chunks must have (equality)."""
        kb = _kb(ctx, knowledge_base)
        if not query.strip() or len(query) > 2000:
            raise ToolError("query must be 1 to 2,000 characters")
        filters = filters or {}
        if len(filters) > 20 or not all(_META_KEY.match(k) for k in filters):
            raise ToolError("filters: at most 20 keys of letters, digits and _ . : -")
        if any(isinstance(v, str) and len(v) > 500 for v in filters.values()):
            raise ToolError("filters: a value is at most 500 characters")
        where = SearchFilter.build(metadata=filters)
        params = SearchParams(query=query, mode=mode, limit=limit, filter=where)
        try:
            outcome = knowledge_base_search(kb=kb, params=params)
        except Conflict as exc:
            raise ToolError(exc.message) from None
        return SearchResults(
            knowledge_base=knowledge_base,
            mode=mode,
            results=[
                SearchResult(
                    chunk_id=hit.chunk_id,
                    score=round(hit.score, 6),
                    content=hit.content,
                    citation=Citation(
                        document_id=hit.document_id,
                        filename=hit.citation.filename,
                        title=hit.citation.document_title or hit.citation.title,
                        chunk=hit.citation.chunk,
                        page=hit.citation.page,
                        section=hit.citation.section,
                        slide=hit.citation.slide,
                        sheet=hit.citation.sheet,
                        rows=hit.citation.rows,
                    ),
                )
                for hit in outcome.results
            ],
        )

    @server.tool(annotations=READ_ONLY)
    def get_document(knowledge_base: str, document_id: int, ctx: Context) -> DocumentText:
        """A document's text as it was indexed (its chunks in order)."""
        kb = _kb(ctx, knowledge_base)
        try:
            document = document_get(kb=kb, document_id=document_id)
        except RagStudioError as exc:
            raise ToolError(exc.message) from None
        chunks = document_chunks(kb=kb, document=document)
        text = "\n\n".join(c.text for c in chunks)
        return DocumentText(
            document_id=document.pk,
            title=document.title,
            filename=document.original_filename,
            status=document.status,
            chunks=len(chunks),
            text=text[:DOCUMENT_TEXT_CHARS],
            truncated=len(text) > DOCUMENT_TEXT_CHARS,
        )

    @server.tool(annotations=READ_ONLY)
    def get_chunk_context(
        knowledge_base: str,
        document_id: int,
        chunk_id: str,
        ctx: Context,
        neighbours: int = Field(1, ge=0, le=5),
    ) -> ChunkContext:
        """A search result's chunk with the chunks before and after it in its document."""
        kb = _kb(ctx, knowledge_base)
        try:
            document = document_get(kb=kb, document_id=document_id)
        except RagStudioError as exc:
            raise ToolError(exc.message) from None
        chunks = document_chunks(kb=kb, document=document)
        at = next((i for i, c in enumerate(chunks) if c.id == chunk_id), None)
        if at is None:
            raise ToolError(f"chunk {chunk_id!r} is not in document {document_id}")
        return ChunkContext(
            document_id=document.pk,
            filename=document.original_filename,
            chunk=_chunk_text(chunks[at]),
            before=[_chunk_text(c) for c in chunks[max(0, at - neighbours) : at]],
            after=[_chunk_text(c) for c in chunks[at + 1 : at + 1 + neighbours]],
        )

    return server


@contextmanager
def stdio_user(user: Any) -> Iterator[None]:
    token = _STDIO_USER.set(user)
    try:
        yield
    finally:
        _STDIO_USER.reset(token)


def _security() -> TransportSecuritySettings:
    hosts = list(settings.ALLOWED_HOSTS)
    if not hosts or "*" in hosts or any(h.startswith(".") for h in hosts):
        # Django has checked the Host already (wildcards the SDK cannot express).
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    allowed = [pattern for host in hosts for pattern in (host, f"{host}:*")]
    return TransportSecuritySettings(allowed_hosts=allowed, allowed_origins=["*"])


class _Bridge:
    """The SDK's session manager on an event loop in a thread of this process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.manager = StreamableHTTPSessionManager(
            app=build_server()._lowlevel_server,
            json_response=True,
            stateless=True,
            security_settings=_security(),
        )
        thread = threading.Thread(target=self._run, name="mcp-loop", daemon=True)
        thread.start()
        self.ready.wait(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve() -> None:
            async with self.manager.run():
                self.ready.set()
                await asyncio.Event().wait()

        self.loop.run_until_complete(serve())

    def call(
        self, scope: dict[str, Any], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        future = asyncio.run_coroutine_threadsafe(self._call(scope, body), self.loop)
        return future.result(REQUEST_TIMEOUT)

    async def _call(
        self, scope: dict[str, Any], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        sent = False
        finished = asyncio.Event()
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body"):
                    finished.set()

        await self.manager.handle_request(scope, receive, send)
        finished.set()
        return status, headers, b"".join(parts)


_bridge: _Bridge | None = None
_bridge_lock = threading.Lock()


def _get_bridge() -> _Bridge:
    global _bridge
    with _bridge_lock:
        if _bridge is None:
            _bridge = _Bridge()
        return _bridge


MAX_BODY_BYTES = 4 * 1024 * 1024


@csrf_exempt
def mcp_endpoint(request: HttpRequest) -> HttpResponse:
    """POST JSON-RPC to the MCP server as the key's user (GET and DELETE: 405, stateless)."""
    token = bearer_token(request)
    user = request_key_user(request) if token is not None else None
    if user is None:
        refused = JsonResponse(
            {"error": "a bearer API key is required (the API keys page makes one)"}, status=401
        )
        refused["WWW-Authenticate"] = 'Bearer realm="ragstudio"'
        return refused
    request.user = user  # for the request's log line and audit origin
    if len(request.body) > MAX_BODY_BYTES:
        return JsonResponse({"error": "the request body is too large"}, status=413)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": request.META.get("QUERY_STRING", "").encode("latin-1"),
        "root_path": "",
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.items()
        ],
        "client": (request.META.get("REMOTE_ADDR", ""), 0),
        "server": (request.get_host().rsplit(":", 1)[0], int(request.get_port() or 80)),
        "state": {},
        SCOPE_USER: user,
    }
    status, headers, body = _get_bridge().call(scope, request.body)
    response = HttpResponse(body, status=status)
    for name, value in headers:
        key = name.decode("latin-1")
        if key.lower() not in ("content-length", "transfer-encoding", "connection"):
            response[key] = value.decode("latin-1")
    return response
