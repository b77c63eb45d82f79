"""The wire formats the fault server speaks: OpenAI chat completions and Anthropic messages.

Each protocol parses a request body into a :class:`Call`, and writes answers and errors the way
the real service does (status codes, error JSON, ``retry-after`` headers, usage fields), so the
official SDKs raise the same exceptions they would against the real thing.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class Call:
    model: str
    texts: list[str]  # every prompt text (system included), for counting tokens
    last_user: str
    max_tokens: int
    stop: list[str]
    system: str | None


def _retry_headers(retry_after_s: float | None) -> dict[str, str]:
    if retry_after_s is None:
        return {}
    return {"retry-after": str(max(1, math.ceil(retry_after_s))), "retry-after-ms": str(int(retry_after_s * 1000) + 1)}


def _content_text(content: object) -> str:
    """A message's text: a string, or a list of ``{"type": "text", "text": …}`` blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    raise TypeError(f"message content must be a string or a list of blocks, not {type(content).__name__}")


class WireProtocol:
    path: str

    def parse(self, body: dict) -> Call:
        raise NotImplementedError

    def key(self, request: web.Request) -> str | None:
        raise NotImplementedError

    def answer(self, call: Call, text: str, prompt_tokens: int, completion_tokens: int, stop: str | None, truncated: bool) -> dict:
        raise NotImplementedError

    def error(self, status: int, message: str, retry_after_s: float | None = None) -> web.Response:
        raise NotImplementedError


class OpenAIWire(WireProtocol):
    path = "/v1/chat/completions"
    _types = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_exceeded"}

    def parse(self, body: dict) -> Call:
        messages = body["messages"]
        texts = [_content_text(m["content"]) for m in messages]
        users = [t for m, t in zip(messages, texts) if m["role"] == "user"]
        stop = body.get("stop") or []
        system = "\n".join(t for m, t in zip(messages, texts) if m["role"] == "system") or None
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        return Call(body["model"], texts, users[-1] if users else "", int(max_tokens), [stop] if isinstance(stop, str) else list(stop), system)

    def key(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def answer(self, call: Call, text: str, prompt_tokens: int, completion_tokens: int, stop: str | None, truncated: bool) -> dict:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length" if truncated and stop is None else "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
        }

    def error(self, status: int, message: str, retry_after_s: float | None = None) -> web.Response:
        kind = self._types.get(status, "server_error")
        return web.json_response({"error": {"message": message, "type": kind, "code": None, "param": None}}, status=status, headers=_retry_headers(retry_after_s))


class AnthropicWire(WireProtocol):
    path = "/v1/messages"
    _types = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}

    def parse(self, body: dict) -> Call:
        if "max_tokens" not in body:
            raise KeyError("max_tokens is required")
        messages = body["messages"]
        if any(m["role"] not in ("user", "assistant") for m in messages):
            raise ValueError("messages may only have the roles user and assistant; use the top-level system parameter")
        system = body.get("system")
        system_text = _content_text(system) if system is not None else None
        texts = ([system_text] if system_text else []) + [_content_text(m["content"]) for m in messages]
        users = [_content_text(m["content"]) for m in messages if m["role"] == "user"]
        return Call(body["model"], texts, users[-1] if users else "", int(body["max_tokens"]), list(body.get("stop_sequences") or []), system_text)

    def key(self, request: web.Request) -> str | None:
        """``x-api-key``, or a bearer token (newer SDKs send the key that way)."""
        auth = request.headers.get("Authorization", "")
        return request.headers.get("x-api-key") or (auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None)

    def answer(self, call: Call, text: str, prompt_tokens: int, completion_tokens: int, stop: str | None, truncated: bool) -> dict:
        reason = "stop_sequence" if stop is not None else "max_tokens" if truncated else "end_turn"
        return {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": reason,
            "stop_sequence": stop,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }

    def error(self, status: int, message: str, retry_after_s: float | None = None) -> web.Response:
        kind = self._types.get(status, "api_error")
        return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status, headers=_retry_headers(retry_after_s))


PROTOCOLS: dict[str, WireProtocol] = {"openai": OpenAIWire(), "anthropic": AnthropicWire()}
