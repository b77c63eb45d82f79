"""API engines: async SDK clients in Ray actors that share one rate limiter per provider key.

The driver (:class:`ApiEngine`) cuts a batch into small chunks and keeps a bounded window of them
in flight on ``resources.replicas`` worker actors (:class:`ApiCaller` as an async Ray actor, no CPU reserved:
they wait on the network). A worker answers each request of a chunk concurrently, each one:

1. waits for a local slot (``limits.max_concurrency``) and a grant from the shared limiter
   (:mod:`harness.generation.limiter`) for its worst case: prompt estimate + max_tokens;
2. calls the provider through its :class:`Protocol` (one per file: ``openai_engine.py``,
   ``anthropic_engine.py``), with the SDK's own retries off;
3. settles the grant with the reported usage and cost;
4. on a retryable failure goes back to 1 after a backoff, until the retry deadline
   (:mod:`harness.generation.retry`); a 429 also slows the shared limiter for every worker.

Whatever happens, each request comes back exactly once: as an answer or as a failed result with
its error kind. The API key comes with the config (:meth:`ModelConfig.holding_key`, read on the
driver) or from ``api_key_env`` here, and is handed to the workers as a :class:`Secret` (masked in
every repr, never logged, never written).

:meth:`ApiCaller.stream` is the same path with the provider's streaming call
(:meth:`Protocol.stream`), for ``routerbench serve``: it yields the answer's text as
:class:`Delta` events as the provider sends them, then the final
:class:`~harness.generation.base.Result`. Retries happen only before the first delta (a retry
after text went out would send it twice); a failure after it ends the stream with a failed result
holding the partial text.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.errors import UserError
from harness.generation.actor_pool import run_chunks
from harness.generation.base import Engine, Request, Result, check_unique
from harness.generation.cost import token_cost
from harness.generation.limiter import Grant, RateLimiter, RemoteLimiter, get_limiter, limiter_name
from harness.ray_runtime import ensure_ray
from harness.generation.retry import MalformedResponse, SpendCapReached, classify, retry_after_s, retrying
from harness.model_config import ModelConfig

#: Header carrying the sample_id with each call: lets a server (ours, a gateway) trace attempts.
SAMPLE_HEADER = "X-Routerbench-Sample-Id"
NO_KEY = "EMPTY"  # what SDKs get for servers that need no key (they insist on some string)


class Secret:
    """A value that never shows itself in a repr, a log line or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def api_key(config: ModelConfig) -> Secret:
    """The key from the variable ``api_key_env`` names; servers that need none get a placeholder."""
    if config.api_key_env is None:
        if config.engine.needs_key and not config.base_url:
            raise UserError(f"{config.source or config.name}: field 'api_key_env': provider {config.provider} needs the name of the variable holding its key")
        return Secret(NO_KEY)
    value = config.holding_key().api_key()
    assert value is not None  # holding_key refuses an unset variable
    return Secret(value)


@dataclass(frozen=True)
class Completion:
    text: str
    input_tokens: int | None
    output_tokens: int | None


@dataclass(frozen=True)
class Delta:
    """A piece of an answer's text, as the provider streamed it (:meth:`ApiCaller.stream`)."""

    text: str


#: What :meth:`ApiCaller.stream` yields: deltas, then exactly one :class:`Result` (always the last).
StreamEvent = Delta | Result


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """A cautious upper estimate (a token per 3 characters, plus per-turn overhead) for reserving
    capacity before the provider reports the real count."""
    return sum(math.ceil(len(m.get("content") or "") / 3) + 4 for m in messages) + 3


def sdk_call_args(method: Any, body: dict[str, Any], extra_body: dict[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for an SDK method: fields its signature lacks (SDKs drop parameters over
    versions, e.g. sampling ones) travel in ``extra_body``, so the request body stays the same."""
    known = _parameters(getattr(method, "__func__", method))
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known} | (extra_body or {})
    return kwargs | ({"extra_body": extra} if extra else {})


@functools.cache
def _parameters(method: Any) -> frozenset[str]:
    return frozenset(inspect.signature(method).parameters)


def with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """Prepend the config's system prompt unless the request brings its own."""
    if not system or any(m.get("role") == "system" for m in messages):
        return messages
    return [{"role": "system", "content": system}, *messages]


class Protocol(ABC):
    """One provider's API through its official async SDK. Built inside the worker."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @abstractmethod
    def make_client(self, key: str) -> Any:
        """The SDK's async client, with its own retries off (ours count against the limiter)."""

    @abstractmethod
    async def complete(self, client: Any, request: Request) -> Completion:
        """One call; raises the SDK's exceptions, or MalformedResponse for a body it cannot read."""

    async def stream(self, client: Any, request: Request) -> AsyncIterator[Delta | Completion]:
        """One streamed call: the text as deltas (:class:`Delta`) as they arrive, then one
        :class:`Completion` (the whole text, the stream's usage) once the answer is complete.
        Raises as :meth:`complete` does, also mid-stream (MalformedResponse for a stream that ends
        before its answer does). This default does not stream: one delta once the whole answer is there."""
        done = await self.complete(client, request)
        if done.text:
            yield Delta(done.text)
        yield done

    def max_tokens(self, request: Request) -> int:
        return request.max_tokens or self.config.sampling.max_tokens


def _describe(exc: BaseException, secret: str) -> str:
    first_line = next(iter(str(exc).strip().splitlines()), "")
    text = f"{type(exc).__name__}: {first_line}"
    return text.replace(secret, "***") if secret and secret != NO_KEY else text


class ApiCaller:
    """Answers requests for one config: limiter, SDK call, retries. Runs as an async Ray actor
    (started by :class:`ApiEngine`), or in-process with an in-process :class:`RateLimiter`."""

    def __init__(self, config: ModelConfig, protocol: type[Protocol], limiter: RemoteLimiter | RateLimiter, key: Secret) -> None:
        self.config = config
        self.protocol = protocol(config)
        self.limiter = limiter
        self._key = key
        self.client = self.protocol.make_client(key.reveal())
        self.slots = asyncio.Semaphore(config.limits.max_concurrency)

    async def run(self, requests: list[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self.answer(r) for r in requests)))

    async def answer(self, request: Request) -> Result:
        attempts = 0
        try:
            async for attempt in retrying(self.config.limits):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    async with self.slots:  # held for the call, not for the backoff after it
                        result = await self._attempt(request)
            result.attempts = attempts
            return result
        except Exception as exc:  # every failure becomes a result: nothing is lost
            return self._failure(request, exc, attempts)

    async def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        """The answer as it is written: deltas (:class:`Delta`) as the provider streams them, then the
        final :class:`Result` (``response`` the whole text, usage from the stream, cost, latency of
        the whole call, attempts), always last and always there: a failure comes as a failed result,
        never as an exception (cancellation excepted).

        Limiter, slot, spend cap and retries as :meth:`answer`, except that retries happen only
        until the first delta: once text went out a retry would send it again, so a failure after
        it ends the stream with a failed result holding the partial text as ``response``. The
        grant is settled whatever happens: with the stream's usage when it finished, as a failed
        call otherwise (also when the consumer stops early, ``aclose()``, or is cancelled)."""
        attempts, events = 0, None
        try:
            async for attempt in retrying(self.config.limits):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    events = self._stream_attempt(request)
                    event = await anext(events)  # a failure up to here has closed the attempt: retried
        except Exception as exc:
            yield self._failure(request, exc, attempts)
            return
        assert events is not None
        parts: list[str] = []
        try:
            while isinstance(event, Delta):
                parts.append(event.text)
                yield event
                event = await anext(events)
        except Exception as exc:  # after the first delta: not retried
            failed = self._failure(request, exc, attempts)
            failed.response = "".join(parts)
            yield failed
            return
        finally:
            await events.aclose()  # settles the grant unless it was (early stop, cancellation)
        event.attempts = attempts
        yield event

    async def _stream_attempt(self, request: Request) -> AsyncIterator[StreamEvent]:
        """One streamed call, holding a slot and its grant until it ends: deltas, then the
        answer's Result. Raises on failure; every way out (also an early ``aclose()`` or a
        cancellation) settles the grant once."""
        async with self.slots:
            grant, start = await self._reserve(request)
            chunks = self.protocol.stream(self.client, request)
            settled = False
            try:
                async for chunk in chunks:
                    if isinstance(chunk, Completion):
                        settled = True
                        result = await self._settle_answer(grant.id, request, chunk, start)
                        yield result
                        return
                    yield chunk
                raise MalformedResponse("the stream ended without its answer")
            except BaseException as exc:  # GeneratorExit and cancellation too: a grant is always closed
                if not settled:
                    settled = True
                    await asyncio.shield(self._settle_failure(grant.id, exc))
                raise
            finally:
                await chunks.aclose()  # the SDK's stream closes its response

    async def _attempt(self, request: Request) -> Result:
        grant, start = await self._reserve(request)
        try:
            done = await self.protocol.complete(self.client, request)
        except BaseException as exc:  # cancelled too: a grant is always closed
            await asyncio.shield(self._settle_failure(grant.id, exc))
            raise
        return await self._settle_answer(grant.id, request, done, start)

    async def _reserve(self, request: Request) -> tuple[Grant, float]:
        """A grant for the call's worst case (or SpendCapReached), and the call's start time."""
        price, max_tokens = self.config.price, self.protocol.max_tokens(request)
        estimate = estimate_prompt_tokens(request.messages)
        worst_cost = price.cost(estimate, max_tokens)
        grant = await self.limiter.acquire(estimate + max_tokens, worst_cost)
        if not grant.ok:
            raise SpendCapReached(f"limits.max_spend_usd = {self.config.limits.max_spend_usd} reached")
        return grant, time.perf_counter()

    async def _settle_answer(self, grant_id: int, request: Request, done: Completion, start: float) -> Result:
        """Settle a grant with the answer's usage and cost; the answer as a Result."""
        latency = time.perf_counter() - start
        cost = token_cost(self.config.price, done.input_tokens, done.output_tokens)
        used = None if done.input_tokens is None or done.output_tokens is None else done.input_tokens + done.output_tokens
        await self.limiter.settle(grant_id, used, cost)
        return Result(request.sample_id, self.config.name, done.text, done.input_tokens, done.output_tokens, latency, cost)

    def _failure(self, request: Request, exc: BaseException, attempts: int) -> Result:
        return Result.failure(request, self.config.name, classify(exc), _describe(exc, self._key.reveal()), attempts)

    async def _settle_failure(self, grant_id: int, exc: BaseException) -> None:
        """An error status was not billed (and a 429 not counted, but reported: it slows every
        caller of the key); a call that got no readable answer (timeout, dropped, malformed) may
        have run: it keeps its worst case."""
        status = getattr(exc, "status_code", None)
        if status == 429:
            await self.limiter.throttled(grant_id, retry_after_s(exc))
        if isinstance(status, int) and status >= 400:
            await self.limiter.settle(grant_id, 0 if status == 429 else None, 0.0)
        else:
            await self.limiter.settle(grant_id, None, None)


class ApiEngine(Engine):
    """Driver side of an API engine; subclasses name their :class:`Protocol`."""

    protocol: ClassVar[type[Protocol]]
    chunk_size: ClassVar[int] = 8

    def __init__(self, config: ModelConfig, *, pin_to_this_node: bool = False) -> None:
        super().__init__(config)
        self.pin_to_this_node = pin_to_this_node  # a server on this node's 127.0.0.1
        self._workers: list[Any] = []
        self.limiter: RemoteLimiter | None = None

    def start(self) -> None:
        """Create the limiter and the worker actors (done on first use)."""
        if self._workers:
            return
        ray = ensure_ray()
        key = api_key(self.config)
        name = limiter_name(self.config.provider, self.config.base_url, key.reveal(), self.config.model)
        self.limiter = get_limiter(name, self.config.limits)
        options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 10_000}
        if self.pin_to_this_node or self.config.resources.custom:  # custom: the stage holding this engine took them
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        worker = ray.remote(ApiCaller).options(**options)
        self._workers = [worker.remote(self.config, self.protocol, self.limiter, key) for _ in range(self.config.resources.replicas)]

    def _chunk(self) -> int:
        return max(1, min(self.chunk_size, self.config.limits.max_concurrency // 2))

    def stream_batches(self, requests: Iterable[Request]) -> Iterator[list[Result]]:
        """Results a chunk at a time, as chunks complete; at most a bounded window in flight."""
        batch = check_unique(requests)
        if not batch:
            return
        self.start()
        size = self._chunk()
        window = max(2 * len(self._workers), math.ceil(2 * self.config.limits.max_concurrency * len(self._workers) / size))
        yield from run_chunks(self._workers, batch, size, window, self.config.name)

    def stream(self, requests: Iterable[Request]) -> Iterator[Result]:
        for results in self.stream_batches(requests):
            yield from results

    def limiter_stats(self):
        """The shared limiter's counters (granted, refused, tokens, spend, peak concurrency)."""
        self.start()
        assert self.limiter is not None
        return self.limiter.snapshot()

    def close(self) -> None:
        import ray

        for w in self._workers:
            ray.kill(w)
        self._workers = []


__all__ = ["ApiCaller", "ApiEngine", "Completion", "Delta", "MalformedResponse", "Protocol", "SAMPLE_HEADER", "Secret", "StreamEvent", "api_key"]
