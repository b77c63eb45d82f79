"""A small OpenAI-compatible chat server on 127.0.0.1 whose answers depend on what it is asked: a
judge that rates, models that answer in their own voice (the fault server only echoes prompts)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def user_text(body: dict) -> str:
    """A request's user messages, one after another."""
    return "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "user")


class ChatServer:
    """``POST …/chat/completions`` answered by ``answer(body)``: the reply's text, or None for a 500
    (an engine failure); every answer's usage is 10 prompt and 5 completion tokens. Every request
    body is kept in ``bodies``. Serves from construction until :meth:`close` (or the ``with`` block's end)."""

    def __init__(self, answer: Callable[[dict], str | None]) -> None:
        self.bodies: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                text = answer(body)
                if text is None:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                doc = {
                    "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body.get("model", "model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }  # fmt: skip
                data = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> ChatServer:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
