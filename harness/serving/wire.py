"""OpenAI's chat-completions wire format: the request body we accept, the bodies we send back.

Only what routing needs is typed (``model``, ``messages``, ``stream``, ``max_tokens``); other
sampling fields are accepted and ignored, since the chosen model's config fixes its sampling (the
store's ``config_hash`` then says what produced every traffic answer). Errors use OpenAI's error
JSON, ``{"error": {"message", "type", "param", "code"}}``, so official clients raise their usual
exception types (404 → ``NotFoundError``, 400 → ``BadRequestError``, 502 → ``InternalServerError``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ROUTE_HEADER = "x-routerbench-route"


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        """OpenAI's list-of-parts form: text parts are joined; any other part is refused."""
        if isinstance(value, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
                raise ValueError("only text content parts are supported")
            return "\n".join(p["text"] for p in value)
        return value


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def token_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def turns(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def routing_text(self) -> str:
        """What the router reads: the user turns (the question, not a system prompt)."""
        users = [m.content for m in self.messages if m.role == "user"]
        return "\n".join(users) if users else self.messages[-1].content

    def stored_prompt(self) -> str:
        """The store's prompt cell: plain text for one user turn, else the turns as JSON."""
        if len(self.messages) == 1 and self.messages[0].role == "user":
            return self.messages[0].content
        return json.dumps(self.turns(), ensure_ascii=False)


class BadBody(ValueError):
    """The body is not a chat-completions request; the message says where."""


def parse_body(raw: bytes) -> ChatBody:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"the request body is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadBody("the request body must be a JSON object")
    try:
        return ChatBody.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadBody(f"field '{where}': {first['msg']}") from None


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(cid: str, model: str, text: str, input_tokens: int | None, output_tokens: int | None) -> dict[str, Any]:
    usage = None
    if input_tokens is not None and output_tokens is not None:
        usage = {"prompt_tokens": input_tokens, "completion_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}],
        "usage": usage,
    }


DONE = b"data: [DONE]\n\n"


class Chunks:
    """One streamed answer's server-sent events, as OpenAI's chat-completion chunks."""

    def __init__(self, cid: str, model: str) -> None:
        self.cid, self.model, self.created = cid, model, int(time.time())

    def _chunk(self, delta: dict[str, Any], finish: str | None, usage: dict | None = None) -> bytes:
        doc = {"id": self.cid, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if usage is not None:
            doc["usage"] = usage
        return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n".encode()

    def role(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def content(self, text: str) -> bytes:
        return self._chunk({"content": text}, None)

    def finish(self, input_tokens: int | None, output_tokens: int | None) -> bytes:
        return self._chunk({}, "stop", completion_body(self.cid, self.model, "", input_tokens, output_tokens)["usage"])

    @staticmethod
    def error(message: str, kind: str, code: str | None = None) -> bytes:
        """A failure after the stream began (the status line is long gone): OpenAI's error JSON as an event."""
        return f"data: {json.dumps(error_body(message, kind, code), ensure_ascii=False)}\n\n".encode()


def stream_events(cid: str, model: str, text: str, input_tokens: int | None, output_tokens: int | None) -> list[bytes]:
    """A whole answer as server-sent events: role, content, finish (with usage), ``[DONE]``."""
    c = Chunks(cid, model)
    return [c.role(), c.content(text), c.finish(input_tokens, output_tokens), DONE]


def models_body(names: list[str]) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "routerbench"} for n in names]}
