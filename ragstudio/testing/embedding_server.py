"""A real HTTP server on 127.0.0.1 standing in for an OpenAI-compatible embeddings API.

Each request takes the next scripted reply (status, headers, delay); "ok" replies return
deterministic vectors derived from each input text, in shuffled order with their index."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def fake_vector(text: str, dims: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    vec = np.random.default_rng(seed).normal(size=dims)
    return (vec / np.linalg.norm(vec)).round(6).tolist()


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    dims: int | None = None  # override the dimensions of returned vectors


class EmbeddingServer:
    def __init__(self, dims: int = 8, *, keep_requests: bool = True) -> None:
        self.dims = dims
        self.keep_requests = keep_requests  # off for long benchmarks: bodies add up
        self.script: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.count = 0
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.count += 1
                if server.keep_requests:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = server.script.popleft() if server.script else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status == 200:
                    dims = reply.dims or server.dims
                    data = [
                        {"object": "embedding", "index": i, "embedding": fake_vector(t, dims)}
                        for i, t in enumerate(body["input"])
                    ]
                    payload = {
                        "object": "list",
                        "data": data[::-1],
                        "model": body["model"],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1},
                    }
                else:
                    payload = {"error": {"message": f"scripted {reply.status}", "type": "test"}}
                raw = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> EmbeddingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
