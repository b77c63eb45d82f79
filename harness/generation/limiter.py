"""One rate limiter per provider key and model, shared by every worker as a named Ray actor.

It holds two token buckets (requests/min and tokens/min), a concurrency cap and a spend cap.
A call first :meth:`RateLimiter.acquire`s a grant for its worst case (one request, prompt +
max_tokens tokens, the cost of that), then :meth:`RateLimiter.settle`s it with the usage the
provider reported: unused tokens go back into the bucket, extra ones are taken (the bucket may go
into debt), and the spend becomes the real cost. Waiters are served first come, first served.

The spend cap is never exceeded: a call is let through only while the money already spent, plus
the worst case of every call in flight, plus its own worst case stays within ``max_spend_usd``;
when that fails and nothing is in flight, the call (and every later one) is refused.

Providers limit each model separately, so the actor is named after the provider, the endpoint,
a hash of the key (never the key) and the model. The first worker to ask creates it with its
config's limits; it lives as long as the Ray job that created it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from harness.model_config import Limits

NAMESPACE = "routerbench"
_UNLIMITED = float("inf")
_EPSILON = 1e-9  # rounding: a wait of exactly the computed time must be enough


@dataclass
class TokenBucket:
    """``rate_per_s`` units refill continuously up to ``capacity``; the level may go negative (debt)."""

    rate_per_s: float
    capacity: float
    level: float
    updated: float

    @classmethod
    def per_minute(cls, limit: float | None, burst_s: float, now: float) -> TokenBucket:
        if limit is None:
            return cls(_UNLIMITED, _UNLIMITED, _UNLIMITED, now)
        capacity = max(limit * burst_s / 60.0, 1.0)
        return cls(limit / 60.0, capacity, capacity, now)

    def refill(self, now: float) -> None:
        if self.rate_per_s != _UNLIMITED:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken. An amount above the capacity waits for a full
        bucket and then takes it all (and more), so a large request is slow, never stuck."""
        self.refill(now)
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need - _EPSILON else (need - self.level) / self.rate_per_s

    def take(self, amount: float) -> None:
        if self.rate_per_s != _UNLIMITED:
            self.level -= amount

    def give_back(self, amount: float) -> None:
        if self.rate_per_s != _UNLIMITED:
            self.level = min(self.capacity, self.level + amount)


@dataclass(frozen=True)
class Grant:
    """Permission for one call (``ok``), or a refusal with its reason."""

    id: int
    tokens: int
    cost_usd: float
    ok: bool = True
    reason: str | None = None


@dataclass
class LimiterStats:
    granted: int = 0
    refused: int = 0
    tokens_reserved: int = 0
    tokens_used: int = 0  # reported usage (the reservation where a call reported none)
    spent_usd: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    waited_s: float = 0.0  # summed over grants


@dataclass
class _Open:
    tokens: int
    cost_usd: float


@dataclass
class RateLimiter:
    """The limiter itself: plain asyncio, usable in-process or as a Ray actor (:func:`get_limiter`)."""

    limits: Limits
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    stats: LimiterStats = field(default_factory=LimiterStats)

    def __post_init__(self) -> None:
        now = self.clock()
        self._requests = TokenBucket.per_minute(self.limits.requests_per_min, self.limits.burst_s, now)
        self._tokens = TokenBucket.per_minute(self.limits.tokens_per_min, self.limits.burst_s, now)
        self._queue = asyncio.Lock()  # fair: waiters acquire in arrival order
        self._changed = asyncio.Condition()  # a call settled: a slot or budget may be free
        self._open: dict[int, _Open] = {}
        self._ids = itertools.count(1)

    # -------------------------------------------------------------- spend
    def _in_flight_cost(self) -> float:
        return sum(o.cost_usd for o in self._open.values())

    def _spend_verdict(self, cost_usd: float) -> str:
        """'go', 'wait' (calls in flight may free budget) or 'refuse'."""
        cap = self.limits.max_spend_usd
        if cap is None or self.stats.spent_usd + self._in_flight_cost() + cost_usd <= cap:
            return "go"
        return "wait" if self._open else "refuse"

    def _blocked(self, cost_usd: float) -> bool:
        return len(self._open) >= self.limits.max_concurrency or self._spend_verdict(cost_usd) == "wait"

    # -------------------------------------------------------------- API
    async def acquire(self, tokens: int, cost_usd: float = 0.0) -> Grant:
        """Wait for a slot, the rates and the budget; reserve ``tokens`` and ``cost_usd``."""
        start = self.clock()
        async with self._queue:
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: not self._blocked(cost_usd))
                if self._spend_verdict(cost_usd) == "refuse":
                    self.stats.refused += 1
                    return Grant(0, tokens, cost_usd, ok=False, reason="spend_cap")
                now = self.clock()
                wait = max(self._requests.wait_s(1, now), self._tokens.wait_s(tokens, now))
                if wait <= 0:
                    break
                await self.sleep(wait)
            self._requests.take(1)
            self._tokens.take(tokens)
            grant = Grant(next(self._ids), tokens, cost_usd)
            self._open[grant.id] = _Open(tokens, cost_usd)
            s = self.stats
            s.granted += 1
            s.tokens_reserved += tokens
            s.in_flight = len(self._open)
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
            s.waited_s += self.clock() - start
            return grant

    async def settle(self, grant_id: int, tokens_used: int | None, cost_usd: float | None) -> None:
        """Close a grant with the reported usage (``None``: unknown, the reservation stands)."""
        spec = self._open.pop(grant_id, None)
        if spec is None:
            return  # refused grants and double settles change nothing
        used = spec.tokens if tokens_used is None else tokens_used
        if used < spec.tokens:
            self._tokens.give_back(spec.tokens - used)
        else:
            self._tokens.take(used - spec.tokens)
        self.stats.tokens_used += used
        self.stats.spent_usd += spec.cost_usd if cost_usd is None else cost_usd
        self.stats.in_flight = len(self._open)
        async with self._changed:
            self._changed.notify_all()

    def snapshot(self) -> LimiterStats:
        return LimiterStats(**vars(self.stats))


def limiter_name(provider: str, endpoint: str | None, api_key: str | None, model: str) -> str:
    """The actor's name: readable, unique per key and model, and free of the key itself."""
    key_hash = hashlib.sha256(f"{endpoint or ''}\0{api_key or ''}".encode()).hexdigest()[:12]
    return f"limiter:{provider}:{key_hash}:{model}"


class RemoteLimiter:
    """The :class:`RateLimiter` interface over a Ray actor handle (picklable, shared by workers)."""

    def __init__(self, handle: object) -> None:
        self.handle = handle

    async def acquire(self, tokens: int, cost_usd: float = 0.0) -> Grant:
        return await self.handle.acquire.remote(tokens, cost_usd)  # type: ignore[attr-defined]

    async def settle(self, grant_id: int, tokens_used: int | None, cost_usd: float | None) -> None:
        await self.handle.settle.remote(grant_id, tokens_used, cost_usd)  # type: ignore[attr-defined]

    def snapshot(self) -> LimiterStats:
        import ray

        return ray.get(self.handle.snapshot.remote())  # type: ignore[attr-defined]


_HELD: dict[tuple[str, str], RemoteLimiter] = {}


def get_limiter(name: str, limits: Limits) -> RemoteLimiter:
    """The named limiter actor, created on first use (Ray must be initialised).

    The driver keeps a reference for as long as it runs: a named actor whose last handle is
    dropped is destroyed, and the next engine for the same key would race with its teardown."""
    import ray

    held = (ray.get_runtime_context().get_job_id(), name)
    if held in _HELD:
        return _HELD[held]
    actor = ray.remote(RateLimiter).options(
        name=name,
        namespace=NAMESPACE,
        get_if_exists=True,
        num_cpus=0,  # waits on timers, holds no CPU
        max_concurrency=100_000,  # every waiting acquire is a coroutine; settles must still get in
    )
    _HELD[held] = RemoteLimiter(actor.remote(limits))
    return _HELD[held]
