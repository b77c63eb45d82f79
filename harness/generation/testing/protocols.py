"""The wire formats the fault server speaks: OpenAI chat completions and Anthropic messages.

Each protocol parses a request body into a :class:`Call`, and writes answers and errors the way
the real service does (status codes, error JSON, ``retry-after`` headers, usage fields), so the
official SDKs raise the same exceptions they would against the real thing. A request with
``stream: true`` is answered as server-sent events (:meth:`WireProtocol.stream`), chunked as the
real service chunks it: OpenAI's ``chat.completion.chunk`` objects (a final usage chunk when
``stream_options.include_usage``) and ``data: [DONE]``; Anthropic's ``message_start``,
``content_block_*``, ``ping``, ``message_delta`` and ``message_stop`` events.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
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
    stream: bool = False
    include_usage: bool = False  # OpenAI's stream_options.include_usage


@dataclass(frozen=True)
class Answer:
    """What the server answers a call: the text (in the pieces it streams), usage, why it stopped."""

    pieces: list[str]  # the text as streamed, a piece per chunk
    prompt_tokens: int
    completion_tokens: int
    stop: str | None  # the stop sequence that ended it
    truncated: bool  # max_tokens reached

    @property
    def text(self) -> str:
        return "".join(self.pieces)


#: One server-sent event as :meth:`WireProtocol.stream` writes it, and whether it carries a piece of text.
Event = tuple[bytes, bool]


def sse(data: dict | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


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

    def stream(self, call: Call, answer: Answer) -> Iterator[Event]:
        """The streamed answer's events, in order; the text ones carry ``answer.pieces`` one each."""
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
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        stops = [stop] if isinstance(stop, str) else list(stop)
        return Call(body["model"], texts, users[-1] if users else "", int(max_tokens), stops, system, bool(body.get("stream")), include_usage)

    def key(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def answer(self, call: Call, text: str, prompt_tokens: int, completion_tokens: int, stop: str | None, truncated: bool) -> dict:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": self._finish_reason(stop, truncated)}],
            "usage": self._usage(prompt_tokens, completion_tokens),
        }

    @staticmethod
    def _finish_reason(stop: str | None, truncated: bool) -> str:
        return "length" if truncated and stop is None else "stop"

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}

    def stream(self, call: Call, answer: Answer) -> Iterator[Event]:
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk", "created": int(time.time()), "model": call.model}
        extra = {"usage": None} if call.include_usage else {}  # with include_usage, every chunk has the field

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return sse(head | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]} | extra)

        yield chunk({"role": "assistant", "content": ""}), False
        for piece in answer.pieces:
            yield chunk({"content": piece}), True
        yield chunk({}, self._finish_reason(answer.stop, answer.truncated)), False
        if call.include_usage:
            yield sse(head | {"choices": [], "usage": self._usage(answer.prompt_tokens, answer.completion_tokens)}), False
        yield sse("[DONE]"), False

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
        stops = list(body.get("stop_sequences") or [])
        return Call(body["model"], texts, users[-1] if users else "", int(body["max_tokens"]), stops, system_text, bool(body.get("stream")))

    def key(self, request: web.Request) -> str | None:
        """``x-api-key``, or a bearer token (newer SDKs send the key that way)."""
        auth = request.headers.get("Authorization", "")
        return request.headers.get("x-api-key") or (auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None)

    def answer(self, call: Call, text: str, prompt_tokens: int, completion_tokens: int, stop: str | None, truncated: bool) -> dict:
        return self._message(call, [{"type": "text", "text": text}], self._stop_reason(stop, truncated), stop, self._usage(prompt_tokens, completion_tokens))

    @staticmethod
    def _message(call: Call, content: list, reason: str | None, stop: str | None, usage: dict) -> dict:
        return {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": stop,
            "usage": usage,
        }

    @staticmethod
    def _stop_reason(stop: str | None, truncated: bool) -> str:
        return "stop_sequence" if stop is not None else "max_tokens" if truncated else "end_turn"

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"input_tokens": prompt_tokens, "output_tokens": completion_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}

    def stream(self, call: Call, answer: Answer) -> Iterator[Event]:
        """As the API streams: ``message_start`` holds the input tokens (and 1 output token so
        far), ``message_delta`` the stop reason and the final output count."""
        def event(kind: str, **data: object) -> bytes:
            return sse({"type": kind, **data}, kind)

        yield event("message_start", message=self._message(call, [], None, None, self._usage(answer.prompt_tokens, 1))), False
        yield event("content_block_start", index=0, content_block={"type": "text", "text": ""}), False
        yield event("ping"), False
        for piece in answer.pieces:
            yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece}), True
        yield event("content_block_stop", index=0), False
        reason = self._stop_reason(answer.stop, answer.truncated)
        yield event("message_delta", delta={"stop_reason": reason, "stop_sequence": answer.stop}, usage={"output_tokens": answer.completion_tokens}), False
        yield event("message_stop"), False

    def error(self, status: int, message: str, retry_after_s: float | None = None) -> web.Response:
        kind = self._types.get(status, "api_error")
        return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status, headers=_retry_headers(retry_after_s))


PROTOCOLS: dict[str, WireProtocol] = {"openai": OpenAIWire(), "anthropic": AnthropicWire()}
