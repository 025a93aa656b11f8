"""A local OpenAI-compatible chat endpoint for tests: answers every request with the text it
is given (or an HTTP error), and counts what it was asked."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class LlmServer:
    answer: str = ""
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@contextmanager
def llm_server(answer: str = "", status: int = 200) -> Iterator[LlmServer]:
    served = LlmServer(answer=answer, status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization")
            served.requests.append({"path": self.path, "body": body, "auth": auth})
            reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": served.answer}}]}
            payload = json.dumps(reply).encode() if served.status == 200 else b'{"error": "test"}'
            self.send_response(served.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
