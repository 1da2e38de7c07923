"""A real HTTP server on 127.0.0.1 standing in for an OpenAI-compatible embeddings API.

Each request takes the next scripted reply (status, headers, delay); "ok" replies return
deterministic vectors derived from each input text, in shuffled order with their index.
Like a real provider it can also take ``latency`` seconds per request and enforce a hidden
rate limit: more than ``requests_per_s`` requests (or ``tokens_per_s`` whitespace tokens)
accepted in the last second answer 429 at once, with ``Retry-After`` (seconds until the
window has room) when ``retry_after`` is set."""

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
    def __init__(
        self,
        dims: int = 8,
        *,
        keep_requests: bool = True,
        latency: float = 0.0,
        requests_per_s: int = 0,
        tokens_per_s: int = 0,
        retry_after: bool = True,
    ) -> None:
        self.dims = dims
        self.latency = latency
        self.requests_per_s = requests_per_s
        self.tokens_per_s = tokens_per_s
        self.retry_after = retry_after
        self.throttled = 0  # requests answered 429 by the hidden limit
        self.in_flight = 0
        self.max_in_flight = 0
        self._accepted: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self.keep_requests = keep_requests  # off for long benchmarks: bodies add up
        self.script: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.count = 0
        self.headers: list[dict[str, str]] = []
        # Requests past ``held_after`` wait until ``release()`` (a test sees a job part-way
        # through, for as long as it needs, whatever the machine's speed).
        self.held_after: int | None = None
        self._gate = threading.Event()
        self._gate.set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                # The counters, for a benchmark that runs the server in another process.
                raw = json.dumps(server.stats()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.count += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    held = server.held_after is not None and server.count > server.held_after
                if held:
                    server._gate.wait(timeout=300)
                if server.keep_requests:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = server.script.popleft() if server.script else Reply()
                if reply.status == 200:
                    reply = server._admit(body.get("input", []), reply)
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
                with server._lock:
                    server.in_flight -= 1
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

    def _admit(self, texts: list[str], reply: Reply) -> Reply:
        """The hidden limit: a 429 at once, or the reply after the provider's latency."""
        tokens = sum(len(str(t).split()) for t in texts)
        with self._lock:
            now = time.monotonic()
            while self._accepted and now - self._accepted[0][0] >= 1.0:
                self._accepted.popleft()
            over_requests = self.requests_per_s and len(self._accepted) >= self.requests_per_s
            used = sum(n for _, n in self._accepted)
            over_tokens = self.tokens_per_s and self._accepted and used + tokens > self.tokens_per_s
            if over_requests or over_tokens:
                self.throttled += 1
                wait = 1.0 - (now - self._accepted[0][0])
                headers = {"Retry-After": f"{max(wait, 0.01):.2f}"} if self.retry_after else {}
                return Reply(429, headers)
            self._accepted.append((now, tokens))
        return Reply(reply.status, reply.headers, reply.delay + self.latency, reply.dims)

    def hold(self, after: int) -> None:
        """Answer ``after`` requests, then hold every later one until ``release()``."""
        self.held_after = after
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "count": self.count,
                "throttled": self.throttled,
                "max_in_flight": self.max_in_flight,
            }

    def __enter__(self) -> EmbeddingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    """Serve in a process of its own (benchmarks: a real provider does not share our CPU),
    printing the base URL; GET / answers the counters."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dims", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--requests-per-s", type=int, default=0)
    parser.add_argument("--tokens-per-s", type=int, default=0)
    parser.add_argument("--no-retry-after", action="store_true")
    args = parser.parse_args()
    server = EmbeddingServer(
        args.dims,
        keep_requests=False,
        latency=args.latency,
        requests_per_s=args.requests_per_s,
        tokens_per_s=args.tokens_per_s,
        retry_after=not args.no_retry_after,
    )
    print(server.url, flush=True)
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()
