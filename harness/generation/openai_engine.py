"""``openai`` and ``openai_compatible``: the official ``openai`` SDK (async) against OpenAI or any
server speaking its chat-completions protocol (vLLM's, llama.cpp's, a gateway) at ``base_url``.

Sampling maps one to one (temperature, max_tokens, stop, seed, top_p); ``engine_args`` go into
the request body as extra fields (e.g. ``top_k`` for vLLM); usage comes from ``usage.prompt_tokens``
and ``usage.completion_tokens``. Streamed (:meth:`OpenAIProtocol.stream`), the same request with
``stream: true`` and ``stream_options.include_usage``: usage comes in the last chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai

from harness.generation.api import SAMPLE_HEADER, ApiEngine, Completion, Delta, Protocol, sdk_call_args, with_system
from harness.generation.base import Request
from harness.generation.retry import MalformedResponse, register_error

# Most specific last: register_error puts each new type first (a timeout is a connection error).
register_error(openai.APIConnectionError, "connection")
register_error(openai.APITimeoutError, "timeout")
register_error(openai.APIResponseValidationError, "malformed")


class OpenAIProtocol(Protocol):
    def make_client(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=key, base_url=self.config.base_url, timeout=self.config.limits.timeout_s, max_retries=0)

    def body(self, request: Request) -> dict[str, Any]:
        s = self.config.sampling
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": with_system(request.messages, self.config.chat.system),
            "max_tokens": self.max_tokens(request),
            "temperature": s.temperature,
        }
        optional = {"stop": s.stop or None, "seed": s.seed, "top_p": s.top_p}
        body.update({k: v for k, v in optional.items() if v is not None})
        return body

    async def _send(self, client: openai.AsyncOpenAI, request: Request, **extra: Any) -> Any:
        """The call, with ``extra`` body fields (the streaming ones)."""
        create = client.chat.completions.create
        args = sdk_call_args(create, self.body(request) | extra, self.config.engine_args)
        return await create(**args, extra_headers={SAMPLE_HEADER: request.sample_id})

    async def complete(self, client: openai.AsyncOpenAI, request: Request) -> Completion:
        response = await self._send(client, request)
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise MalformedResponse(f"no choices[0].message in the answer: {str(response)[:200]}")
        return Completion(choices[0].message.content or "", *_usage(getattr(response, "usage", None)))

    async def stream(self, client: openai.AsyncOpenAI, request: Request) -> AsyncIterator[Delta | Completion]:
        """Chunks' ``choices[0].delta.content`` as deltas; the answer is complete at a
        ``finish_reason``, its usage in the chunk with ``usage`` (the last, with no choices)."""
        chunks = await self._send(client, request, stream=True, stream_options={"include_usage": True})
        parts: list[str] = []
        usage, finished = None, False
        async with chunks:  # closes the response, however the stream ends
            async for chunk in chunks:
                usage = getattr(chunk, "usage", None) or usage
                for choice in getattr(chunk, "choices", None) or []:
                    if getattr(choice, "index", 0) != 0:
                        continue
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if text:
                        parts.append(text)
                        yield Delta(text)
                    finished = finished or getattr(choice, "finish_reason", None) is not None
        if not finished:
            raise MalformedResponse("the stream ended before its answer did (no finish_reason)")
        yield Completion("".join(parts), *_usage(usage))


def _usage(usage: Any) -> tuple[int | None, int | None]:
    return getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)


class OpenAIEngine(ApiEngine):
    protocol = OpenAIProtocol
    needs_key = True


class OpenAICompatibleEngine(OpenAIEngine):
    """Any server speaking OpenAI's protocol at the config's ``base_url`` (vLLM's, llama.cpp's, a gateway)."""

    needs_key = False
    needs_base_url = True
