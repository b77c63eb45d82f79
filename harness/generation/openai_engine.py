"""``openai`` and ``openai_compatible``: OpenAI's chat-completions protocol against OpenAI or any
server speaking it (vLLM's, llama.cpp's, a gateway) at ``base_url``.

The protocol is one JSON POST (and, streamed, server-sent events), sent here with aiohttp rather
than the ``openai`` SDK: the SDK's request and response models cost ~3.5 ms of CPU a call against
~0.5 ms (measured against our fault server on 2 cores), which ``routerbench serve`` pays on every
request's path and ``extend`` on every call. What the SDK did for us is kept: a status ≥ 400 is a
:class:`StatusError` carrying ``status_code`` and the response's headers (``retry-after``), so
:mod:`harness.generation.retry` classifies and paces it as before; timeouts are per connect and
per read (``limits.timeout_s``), as the SDK's; proxies from the environment are honoured.

Sampling maps one to one (temperature, max_tokens, stop, seed, top_p); ``engine_args`` go into
the request body as extra fields (e.g. ``top_k`` for vLLM); usage comes from ``usage.prompt_tokens``
and ``usage.completion_tokens``. Streamed (:meth:`OpenAIProtocol.stream`), the same request with
``stream: true`` and ``stream_options.include_usage``: usage comes in the last chunk.
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from harness.generation.api import SAMPLE_HEADER, ApiEngine, Completion, Delta, Protocol, with_system
from harness.generation.base import Request
from harness.generation.retry import MalformedResponse, register_error

OPENAI_URL = "https://api.openai.com/v1"

# Most specific last: register_error puts each new type first (a timeout is a connection error).
register_error(aiohttp.ClientConnectionError, "connection")
register_error(aiohttp.ClientPayloadError, "connection")  # the body cut off mid-way
register_error(aiohttp.ServerTimeoutError, "timeout")
register_error(aiohttp.ConnectionTimeoutError, "timeout")


class StatusError(Exception):
    """An answer with an error status: ``status_code`` and ``response.headers`` as the SDKs' errors have them."""

    def __init__(self, status_code: int, headers: Any, body: str) -> None:
        super().__init__(f"Error code: {status_code} - {body[:300]}")
        self.status_code = status_code
        self.response = _Headers(headers)


class _Headers:
    def __init__(self, headers: Any) -> None:
        self.headers = headers


class StreamError(Exception):
    """An error event in the middle of a stream (the status was 200)."""


class ChatClient:
    """One base URL and key; an HTTP session per event loop (a session cannot change loops)."""

    def __init__(self, base_url: str, key: str, timeout_s: float) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release = weakref.finalize(self, lambda: None)

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            self._release()  # the previous loop's session, if any
            self._session = aiohttp.ClientSession(timeout=self.timeout, trust_env=True)
            self._loop = loop
            self._release = weakref.finalize(self, _detach, self._session)
        return self._session

    def post(self, body: dict[str, Any], sample_id: str):  # noqa: ANN201 - aiohttp's request context manager
        return self.session().post(self.url, data=json.dumps(body), headers={**self.headers, SAMPLE_HEADER: sample_id})

    def __repr__(self) -> str:
        return f"ChatClient({self.url!r})"  # never the key


def _detach(session: aiohttp.ClientSession) -> None:
    """Close a session without its loop (gone, or another one's): its connections are dropped at
    once (``close()`` would schedule the closing on that loop, and need awaiting)."""
    connector = session.connector
    session.detach()
    if connector is not None:
        connector._close()  # noqa: SLF001 - the synchronous part of close()


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if response.status >= 400:
        raise StatusError(response.status, response.headers, (await response.read()).decode("utf-8", "replace"))


class OpenAIProtocol(Protocol):
    def make_client(self, key: str) -> ChatClient:
        base = self.config.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        return ChatClient(base, key, self.config.limits.timeout_s)

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

    def _payload(self, request: Request, **extra: Any) -> dict[str, Any]:
        """The request body, with ``extra`` fields (the streaming ones) and the config's ``engine_args``."""
        return self.body(request) | extra | (self.config.engine_args or {})

    async def complete(self, client: ChatClient, request: Request) -> Completion:
        async with client.post(self._payload(request), request.sample_id) as response:
            await _raise_for_status(response)
            raw = await response.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            raise MalformedResponse(f"the answer is not JSON: {raw[:200]!r}") from None
        choices = doc.get("choices") if isinstance(doc, dict) else None
        message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if not isinstance(message, dict):
            raise MalformedResponse(f"no choices[0].message in the answer: {str(doc)[:200]}")
        return Completion(message.get("content") or "", *_usage(doc.get("usage")))

    async def stream(self, client: ChatClient, request: Request) -> AsyncIterator[Delta | Completion]:
        """Chunks' ``choices[0].delta.content`` as deltas; the answer is complete at a
        ``finish_reason``, its usage in the chunk with ``usage`` (the last, with no choices)."""
        parts: list[str] = []
        usage, finished = None, False
        async with client.post(self._payload(request, stream=True, stream_options={"include_usage": True}), request.sample_id) as response:
            await _raise_for_status(response)
            async for chunk in _events(response):
                if chunk.get("error"):
                    raise StreamError(f"the stream sent an error: {json.dumps(chunk['error'])[:300]}")
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        parts.append(text)
                        yield Delta(text)
                    finished = finished or choice.get("finish_reason") is not None
        if not finished:
            raise MalformedResponse("the stream ended before its answer did (no finish_reason)")
        yield Completion("".join(parts), *_usage(usage))


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream's ``data:`` lines, up to ``[DONE]``."""
    async for line in response.content:
        text = line.decode("utf-8", "replace").strip()
        if not text.startswith("data:"):
            continue  # blank separators, comments, event names
        data = text[5:].strip()
        if data == "[DONE]":
            await response.content.read()  # to the end of the body: the connection is then reused, not dropped
            return
        try:
            doc = json.loads(data)
        except ValueError:
            raise MalformedResponse(f"a stream event is not JSON: {data[:200]!r}") from None
        if isinstance(doc, dict):
            yield doc


def _usage(usage: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


class OpenAIEngine(ApiEngine):
    protocol = OpenAIProtocol
    needs_key = True


class OpenAICompatibleEngine(OpenAIEngine):
    """Any server speaking OpenAI's protocol at the config's ``base_url`` (vLLM's, llama.cpp's, a gateway)."""

    needs_key = False
    needs_base_url = True
