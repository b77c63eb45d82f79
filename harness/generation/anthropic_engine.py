"""``anthropic``: the official ``anthropic`` SDK (async), Messages API.

Mapping from the OpenAI-style request: ``system`` turns (and the config's ``chat.system``) become
the top-level ``system`` prompt; ``sampling.stop`` becomes ``stop_sequences``; the answer is the
concatenated text blocks. Input tokens are ``input_tokens + cache_creation_input_tokens +
cache_read_input_tokens`` (Anthropic reports cached input apart), output tokens ``output_tokens``.
``sampling.seed`` has no Anthropic equivalent and is not sent.
"""

from __future__ import annotations

from typing import Any

import anthropic

from harness.generation.api import SAMPLE_HEADER, ApiEngine, Completion, Protocol, sdk_call_args
from harness.generation.base import Request
from harness.generation.retry import MalformedResponse, register_error

register_error(anthropic.APIConnectionError, "connection")
register_error(anthropic.APITimeoutError, "timeout")
register_error(anthropic.APIResponseValidationError, "malformed")


def split_system(messages: list[dict[str, str]], default: str | None) -> tuple[str | None, list[dict[str, str]]]:
    """Anthropic takes the system prompt apart from the turns."""
    system = [m["content"] for m in messages if m.get("role") == "system"]
    turns = [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    text = "\n\n".join(system) if system else default
    return text or None, turns


class AnthropicProtocol(Protocol):
    def make_client(self, key: str) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(api_key=key, base_url=self.config.base_url, timeout=self.config.limits.timeout_s, max_retries=0)

    def body(self, request: Request) -> dict[str, Any]:
        s = self.config.sampling
        system, turns = split_system(request.messages, self.config.chat.system)
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": turns,
            "max_tokens": self.max_tokens(request),
            "temperature": s.temperature,
        }
        optional = {"system": system, "stop_sequences": s.stop or None, "top_p": s.top_p}
        body.update({k: v for k, v in optional.items() if v is not None})
        return body

    async def complete(self, client: anthropic.AsyncAnthropic, request: Request) -> Completion:
        create = client.messages.create
        args = sdk_call_args(create, self.body(request), self.config.engine_args)
        message = await create(**args, extra_headers={SAMPLE_HEADER: request.sample_id})
        content = getattr(message, "content", None)
        if not isinstance(content, list):
            raise MalformedResponse(f"no content blocks in the answer: {str(message)[:200]}")
        text = "".join(getattr(b, "text", "") for b in content if getattr(b, "type", None) == "text")
        usage = getattr(message, "usage", None)
        cached = (getattr(usage, "cache_creation_input_tokens", None) or 0) + (getattr(usage, "cache_read_input_tokens", None) or 0)
        input_tokens = getattr(usage, "input_tokens", None)
        return Completion(text, None if input_tokens is None else input_tokens + cached, getattr(usage, "output_tokens", None))


class AnthropicEngine(ApiEngine):
    protocol = AnthropicProtocol
    needs_key = True
