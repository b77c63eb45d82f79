"""One rate limiter per provider key and model, shared by every worker as a named Ray actor.

It holds two token buckets (requests/min and tokens/min), a concurrency cap and a spend cap.
A call first :meth:`RateLimiter.acquire`s a grant for its worst case (one request, prompt +
max_tokens tokens, the cost of that), then :meth:`RateLimiter.settle`s it with the usage the
provider reported: unused tokens go back into the bucket, extra ones are taken (the bucket may go
into debt), and the spend becomes the real cost. Waiters are served first come, first served.

The spend cap is never exceeded: a call is let through only while the money already spent, plus
the worst case of every call in flight, plus its own worst case stays within ``max_spend_usd``;
when that fails and nothing is in flight, the call (and every later one) is refused.

The requests/min rate adapts to what the server really allows (AIMD, as TCP does), because a
config may claim more than the key gets and every caller of the key must slow down together:

* a 429 reported through :meth:`RateLimiter.throttled` multiplies the rate by ``DECREASE`` (0.7),
  never below ``FLOOR`` (1 %) of the reference rate; grants stop until the server's
  ``retry-after`` has passed, and the bucket is emptied so no burst follows. Only a 429 of a call
  granted after the last cut cuts again: calls already sent at the old rate say nothing new.
* from the last cut on, the rate grows back by ``RECOVERY_PER_S`` (1 %) of the reference rate a
  second, up to the configured rate. Slow on purpose: each overshoot costs about one 429, so a
  slow probe keeps 429s a small share of the calls while the pool settles just under the
  server's limit. (A server that refuses a share of calls whatever the load is obeyed as well:
  the rate settles where cuts and recovery balance, higher the higher the reference.)
* the reference rate is ``requests_per_min``; a config without one is unlimited until its first
  429, which starts it at the rate of the grants of the last ``WINDOW_S`` (10) seconds, and its
  reference is the highest rate cut since (it has no ceiling: it keeps probing upward).

Providers limit each model separately, so the actor is named after the provider, the endpoint,
a hash of the key (never the key) and the model. The first worker to ask creates it with its
config's limits; it lives as long as the Ray job that created it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from harness.model_config import Limits

NAMESPACE = "routerbench"
_UNLIMITED = float("inf")
_EPSILON = 1e-9  # rounding: a wait of exactly the computed time must be enough
_RECHECK_S = 1.0  # a waiter looks again this often: the rate may have recovered meanwhile
DECREASE = 0.7  # a 429 multiplies requests/min by this
RECOVERY_PER_S = 0.01  # share of the reference rate won back per second without a 429
FLOOR = 0.01  # share of the reference rate never cut below
WINDOW_S = 10.0  # seconds of grants that give the observed rate of a config without a rate
MAX_PAUSE_S = 600.0  # a retry-after beyond this pauses grants for this long


@dataclass
class TokenBucket:
    """``rate_per_s`` units refill continuously up to ``capacity``; the level may go negative (debt).
    ``updated`` may lie in the future: the bucket is held (nothing refills, nothing is taken) until then."""

    rate_per_s: float
    capacity: float
    level: float
    updated: float
    burst_s: float = 1.0

    @classmethod
    def per_minute(cls, limit: float | None, burst_s: float, now: float) -> TokenBucket:
        if limit is None:
            return cls(_UNLIMITED, _UNLIMITED, _UNLIMITED, now, burst_s)
        capacity = max(limit * burst_s / 60.0, 1.0)
        return cls(limit / 60.0, capacity, capacity, now, burst_s)

    def refill(self, now: float) -> None:
        if now <= self.updated:
            return  # held
        if self.rate_per_s != _UNLIMITED:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken. An amount above the capacity waits for a full
        bucket and then takes it all (and more), so a large request is slow, never stuck."""
        self.refill(now)
        held = max(0.0, self.updated - now)
        need = min(amount, self.capacity)
        return held + (0.0 if self.level >= need - _EPSILON else (need - self.level) / self.rate_per_s)

    def take(self, amount: float) -> None:
        if self.rate_per_s != _UNLIMITED:
            self.level -= amount

    def give_back(self, amount: float) -> None:
        if self.rate_per_s != _UNLIMITED:
            self.level = min(self.capacity, self.level + amount)

    def retune(self, per_minute: float, now: float) -> None:
        """A new rate from now on (the level accrued so far stays, up to the new capacity)."""
        self.refill(now)
        self.rate_per_s = per_minute / 60.0
        self.capacity = max(per_minute * self.burst_s / 60.0, 1.0)
        self.level = min(self.level, self.capacity)

    def hold(self, until: float, now: float, drain: bool = True) -> None:
        """Nothing refills or is taken before ``until``; ``drain`` empties the bucket first, so no
        burst follows a 429 that cut the rate."""
        self.refill(now)
        if drain:
            self.level = min(self.level, 0.0)
        self.updated = max(self.updated, until)


@dataclass
class AdaptiveRate:
    """The requests/min the limiter grants, given the 429s so far (the rule: module docstring).
    Pure state with explicit times, so it is tested without a clock."""

    configured: float | None  # None: unlimited until the first 429
    reference: float | None = None  # what the floor and the recovery step are shares of
    base: float | None = None  # the rate right after the last cut (None: never cut)
    cut_at: float = 0.0
    cut_after_grant: int = 0  # a 429 of a grant up to this id was sent before the last cut
    cuts: int = 0
    grants: deque[float] = field(default_factory=deque)  # recent grant times, while unreferenced

    def __post_init__(self) -> None:
        if self.reference is None:
            self.reference = self.configured

    def rate(self, now: float) -> float | None:
        """Requests/min now; None: unlimited."""
        if self.base is None:
            return self.configured
        assert self.reference is not None
        rate = self.base + RECOVERY_PER_S * self.reference * max(0.0, now - self.cut_at)
        return rate if self.configured is None else min(rate, self.configured)

    def granted(self, now: float) -> None:
        if self.reference is not None:
            return  # the window is only needed to learn a reference
        self.grants.append(now)
        while self.grants and self.grants[0] < now - WINDOW_S:
            self.grants.popleft()

    def observed(self, now: float) -> float:
        """Grants per minute over the last ``WINDOW_S`` seconds (at least one second of them)."""
        recent = [t for t in self.grants if t >= now - WINDOW_S]
        span = min(WINDOW_S, max(1.0, now - recent[0])) if recent else WINDOW_S
        return len(recent) / span * 60.0

    def throttled(self, now: float, grant_id: int, last_grant_id: int) -> bool:
        """A 429 came back for ``grant_id``; ``last_grant_id`` is the newest grant so far.
        Returns whether the rate was cut."""
        if grant_id <= self.cut_after_grant:
            return False
        current = self.rate(now)
        if current is None:
            current = max(self.observed(now), 1.0)
            self.grants.clear()
        self.reference = max(self.reference or 0.0, current)  # a configured rate is never exceeded
        self.base = max(FLOOR * self.reference, DECREASE * current)
        self.cut_at, self.cut_after_grant = now, last_grant_id
        self.cuts += 1
        return True


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
    throttled: int = 0  # 429s reported
    rate_cuts: int = 0  # of them, those that lowered the rate
    requests_per_min: float | None = None  # the adaptive rate at the snapshot (None: unlimited)


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
        self._rate = AdaptiveRate(self.limits.requests_per_min)
        self._queue = asyncio.Lock()  # fair: waiters acquire in arrival order
        self._changed = asyncio.Condition()  # a call settled: a slot or budget may be free
        self._open: dict[int, _Open] = {}
        self._ids = itertools.count(1)
        self._last_grant = 0  # the newest grant's id

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
                self._follow_rate(now)
                wait = max(self._requests.wait_s(1, now), self._tokens.wait_s(tokens, now))
                if wait <= 0:
                    break
                await self.sleep(min(wait, _RECHECK_S))
            grant = self._grant(tokens, cost_usd)
            self.stats.waited_s += self.clock() - start
            return grant

    def _grant(self, tokens: int, cost_usd: float) -> Grant:
        self._requests.take(1)
        self._rate.granted(self.clock())
        self._tokens.take(tokens)
        grant = Grant(next(self._ids), tokens, cost_usd)
        self._last_grant = grant.id
        self._open[grant.id] = _Open(tokens, cost_usd)
        s = self.stats
        s.granted += 1
        s.tokens_reserved += tokens
        s.in_flight = len(self._open)
        s.max_in_flight = max(s.max_in_flight, s.in_flight)
        return grant

    async def acquire_many(self, n: int, tokens: int, cost_usd: float = 0.0) -> list[Grant]:
        """Up to ``n`` grants of the same size in one call (a :mod:`~harness.generation.lease`'s
        spares): the first as :meth:`acquire` waits for it, the others only while they can be
        granted at once and nobody else is waiting, so a batch never waits longer than one call
        would, nor jumps the queue."""
        first = await self.acquire(tokens, cost_usd)
        grants = [first]
        while first.ok and len(grants) < n and not self._queue.locked():
            now = self.clock()
            self._follow_rate(now)
            if self._blocked(cost_usd) or self._spend_verdict(cost_usd) != "go" or max(self._requests.wait_s(1, now), self._tokens.wait_s(tokens, now)) > 0:
                break
            grants.append(self._grant(tokens, cost_usd))
        return grants

    async def settle_many(self, settles: list[tuple[int, int | None, float | None]]) -> None:
        """:meth:`settle` for each ``(grant_id, tokens_used, cost_usd)``, in one call."""
        for grant_id, tokens_used, cost_usd in settles:
            await self.settle(grant_id, tokens_used, cost_usd)

    async def release(self, grant_ids: list[int]) -> None:
        """Give back grants that were never used: their request, tokens and reserved cost, as if
        they had not been granted (a lease's spares that expired)."""
        for grant_id in grant_ids:
            spec = self._open.pop(grant_id, None)
            if spec is None:
                continue
            self._requests.give_back(1)
            self._tokens.give_back(spec.tokens)
            self.stats.granted -= 1
            self.stats.tokens_reserved -= spec.tokens
        self.stats.in_flight = len(self._open)
        async with self._changed:
            self._changed.notify_all()

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

    async def throttled(self, grant_id: int, retry_after_s: float | None = None) -> None:
        """The server refused ``grant_id``'s call with a 429: slow every caller of this key down,
        and grant nothing before its ``retry-after`` (capped like the workers' waits)."""
        now = self.clock()
        self.stats.throttled += 1
        cut = self._rate.throttled(now, grant_id, self._last_grant)
        if cut:
            self.stats.rate_cuts += 1
            self._follow_rate(now)
        pause = min(max(retry_after_s or 0.0, 0.0), MAX_PAUSE_S)
        self._requests.hold(now + pause, now, drain=cut)

    def _follow_rate(self, now: float) -> None:
        rate = self._rate.rate(now)
        if rate is not None and rate != self._requests.rate_per_s * 60.0:
            self._requests.retune(rate, now)

    def snapshot(self) -> LimiterStats:
        stats = LimiterStats(**vars(self.stats))
        stats.requests_per_min = self._rate.rate(self.clock())
        return stats


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

    async def throttled(self, grant_id: int, retry_after_s: float | None = None) -> None:
        await self.handle.throttled.remote(grant_id, retry_after_s)  # type: ignore[attr-defined]

    async def acquire_many(self, n: int, tokens: int, cost_usd: float = 0.0) -> list[Grant]:
        return await self.handle.acquire_many.remote(n, tokens, cost_usd)  # type: ignore[attr-defined]

    async def settle_many(self, settles: list[tuple[int, int | None, float | None]]) -> None:
        await self.handle.settle_many.remote(settles)  # type: ignore[attr-defined]

    async def release(self, grant_ids: list[int]) -> None:
        await self.handle.release.remote(grant_ids)  # type: ignore[attr-defined]

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
