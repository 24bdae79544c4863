"""A small HTTP peer on 127.0.0.1 for the agent's retry rules: it answers each request with the next
scripted answer for its path (status, headers, JSON body) and records what it got. It speaks HTTP, not
our API: it stands for a manager that is overloaded (429, 503 with Retry-After) before it answers."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    at: float  # time.monotonic()
    wall: float  # time.time()
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Peer:
    server: ThreadingHTTPServer
    script: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    fallback: dict[str, tuple[int, dict, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, path: str, *answers: tuple[int, dict, Any]) -> None:
        """Queue answers for a path (matched by prefix, without the query); the last one repeats."""
        self.script[path].extend(answers)

    def requests(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.split("?")[0] == path]

    def _next(self, path: str) -> tuple[int, dict, Any]:
        bare = path.split("?")[0]
        for prefix, queue in self.script.items():
            if bare == prefix:
                if len(queue) > 1:
                    return queue.popleft()
                if queue:
                    return queue[0]
        return 404, {}, {"error": "not_found", "detail": "nothing scripted", "fields": {}}


def start_peer() -> Peer:
    peer: Peer

    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            peer.seen.append(
                Seen(time.monotonic(), time.time(), self.command, self.path, dict(self.headers), body)
            )
            status, headers, answer = peer._next(self.path)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    peer = Peer(server=server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return peer
