"""``anthropic``: the official ``anthropic`` SDK (async), Messages API.

Mapping from the OpenAI-style request: ``system`` turns (and the config's ``chat.system``) become
the top-level ``system`` prompt; ``sampling.stop`` becomes ``stop_sequences``; the answer is the
concatenated text blocks. Input tokens are ``input_tokens + cache_creation_input_tokens +
cache_read_input_tokens`` (Anthropic reports cached input apart), output tokens ``output_tokens``.
``sampling.seed`` has no Anthropic equivalent and is not sent. Streamed
(:meth:`AnthropicProtocol.stream`), the same request with ``stream: true``: text from the
``content_block_delta`` events, input tokens from ``message_start``, output tokens (and input
tokens, where reported) from ``message_delta``; the answer is complete at ``message_stop``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2

from harness.generation.api import SAMPLE_HEADER, ApiEngine, Completion, Delta, Protocol, sdk_call_args
from harness.generation.base import Request
from harness.generation.retry import MalformedResponse, register_error

register_error(anthropic.APIConnectionError, "connection")
register_error(anthropic.APITimeoutError, "timeout")
register_error(anthropic.APIResponseValidationError, "malformed")
# A stream's body is read outside the SDK's request, which raises its HTTP client's errors as they are.
register_error(httpx2.TransportError, "connection")
register_error(httpx2.TimeoutException, "timeout")


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

    async def _send(self, client: anthropic.AsyncAnthropic, request: Request, **extra: Any) -> Any:
        """The call, with ``extra`` body fields (``stream``)."""
        create = client.messages.create
        args = sdk_call_args(create, self.body(request) | extra, self.config.engine_args)
        return await create(**args, extra_headers={SAMPLE_HEADER: request.sample_id})

    async def complete(self, client: anthropic.AsyncAnthropic, request: Request) -> Completion:
        message = await self._send(client, request)
        content = getattr(message, "content", None)
        if not isinstance(content, list):
            raise MalformedResponse(f"no content blocks in the answer: {str(message)[:200]}")
        text = "".join(getattr(b, "text", "") for b in content if getattr(b, "type", None) == "text")
        usage = getattr(message, "usage", None)
        return Completion(text, _input_tokens(usage), getattr(usage, "output_tokens", None))

    async def stream(self, client: anthropic.AsyncAnthropic, request: Request) -> AsyncIterator[Delta | Completion]:
        """The Messages API's events: text deltas as they come; usage from ``message_start`` and
        ``message_delta`` (cumulative counts: the last one reported wins)."""
        events = await self._send(client, request, stream=True)
        parts: list[str] = []
        input_tokens = output_tokens = None
        stopped = False
        async with events:  # closes the response, however the stream ends
            async for event in events:
                kind = getattr(event, "type", None)
                if kind == "message_start":
                    usage = getattr(getattr(event, "message", None), "usage", None)
                    input_tokens, output_tokens = _input_tokens(usage), getattr(usage, "output_tokens", None)
                elif kind == "content_block_delta" and getattr(event.delta, "type", None) == "text_delta":
                    if event.delta.text:
                        parts.append(event.delta.text)
                        yield Delta(event.delta.text)
                elif kind == "message_delta":
                    usage = getattr(event, "usage", None)
                    input_tokens = _input_tokens(usage) if getattr(usage, "input_tokens", None) is not None else input_tokens
                    if getattr(usage, "output_tokens", None) is not None:
                        output_tokens = usage.output_tokens
                elif kind == "message_stop":
                    stopped = True
        if not stopped:
            raise MalformedResponse("the stream ended before its answer did (no message_stop)")
        yield Completion("".join(parts), input_tokens, output_tokens)


def _input_tokens(usage: Any) -> int | None:
    """Input tokens, cached ones included (Anthropic reports them apart)."""
    cached = (getattr(usage, "cache_creation_input_tokens", None) or 0) + (getattr(usage, "cache_read_input_tokens", None) or 0)
    input_tokens = getattr(usage, "input_tokens", None)
    return None if input_tokens is None else input_tokens + cached


class AnthropicEngine(ApiEngine):
    protocol = AnthropicProtocol
    needs_key = True
