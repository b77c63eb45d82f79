"""``openai`` and ``openai_compatible``: the official ``openai`` SDK (async) against OpenAI or any
server speaking its chat-completions protocol (vLLM's, llama.cpp's, a gateway) at ``base_url``.

Sampling maps one to one (temperature, max_tokens, stop, seed, top_p); ``engine_args`` go into
the request body as extra fields (e.g. ``top_k`` for vLLM); usage comes from ``usage.prompt_tokens``
and ``usage.completion_tokens``.
"""

from __future__ import annotations

from typing import Any

import openai

from harness.generation.api import SAMPLE_HEADER, ApiEngine, Completion, Protocol, sdk_call_args, with_system
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

    async def complete(self, client: openai.AsyncOpenAI, request: Request) -> Completion:
        create = client.chat.completions.create
        args = sdk_call_args(create, self.body(request), self.config.engine_args)
        response = await create(**args, extra_headers={SAMPLE_HEADER: request.sample_id})
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise MalformedResponse(f"no choices[0].message in the answer: {str(response)[:200]}")
        usage = getattr(response, "usage", None)
        return Completion(
            choices[0].message.content or "",
            getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None),
        )


class OpenAIEngine(ApiEngine):
    protocol = OpenAIProtocol
    needs_key = True


class OpenAICompatibleEngine(OpenAIEngine):
    """Any server speaking OpenAI's protocol at the config's ``base_url`` (vLLM's, llama.cpp's, a gateway)."""

    needs_key = False
    needs_base_url = True
