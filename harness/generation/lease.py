"""A request path's view of the shared limiter: grants fetched ahead, settles sent in batches.

The shared :class:`~harness.generation.limiter.RateLimiter` is a Ray actor; asking it for every
call costs a round trip on the call's critical path plus a settle, two actor calls a request
(measured in ``routerbench serve`` on 2 cores: 4.8 ms of latency and 6.5 ms of CPU a request,
more than routing itself). :class:`LeasingLimiter` keeps the same interface and the same
guarantees, with fewer calls:

* **spares**: when it has to ask, it asks for as many grants as calls are in flight here or
  expected in the next ``LOOKAHEAD_S`` at the last second's rate (:meth:`RateLimiter.acquire_many`: the first waits as usual, the rest only if they can be
  granted at once), and keeps the extra ones for the next calls. A spare is a real grant of the
  shared limiter: it holds a request, its tokens and its worst-case cost there, so every cap
  (requests/min, tokens/min, concurrency, spend) still holds across every caller of the key. A
  call whose worst case exceeds a spare's asks for its own. Spares unused for ``spare_ttl_s``
  are released (request, tokens and cost given back) so an idle server holds nothing.
* **batched settles**: a settle only gives back what a call did not use, so it is queued and
  sent with the others queued meanwhile, one actor call at a time. Until it lands the shared
  limiter counts the call's worst case: the spend cap errs on the safe side.
* a 429 (:meth:`throttled`) goes out at once and drops the spares, so the pause it asks for is
  not skipped by grants fetched before it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from harness.generation.limiter import Grant, LimiterStats

SPARE_TTL_S = 0.5  # an unused spare goes back after this long
MAX_SPARES = 16  # never more spares than this, whatever the concurrency
SETTLE_BATCH_S = 0.05  # a settle waits this long for others to go with it
LOOKAHEAD_S = 0.2  # a fetch brings the grants the recent call rate needs for this long

log = logging.getLogger(__name__)


class SharedLimiter(Protocol):
    """What a lease needs of the shared limiter (:class:`RateLimiter`, or :class:`RemoteLimiter` over its actor)."""

    async def acquire_many(self, n: int, tokens: int, cost_usd: float = 0.0) -> list[Grant]: ...
    async def settle_many(self, settles: list[tuple[int, int | None, float | None]]) -> None: ...
    async def release(self, grant_ids: list[int]) -> None: ...
    async def throttled(self, grant_id: int, retry_after_s: float | None = None) -> None: ...
    def snapshot(self) -> LimiterStats: ...


@dataclass(frozen=True)
class _Spare:
    grant: Grant
    fetched: float


class LeasingLimiter:
    """The :class:`RateLimiter` interface, for one process's calls, over the shared limiter."""

    def __init__(self, shared: SharedLimiter, max_spares: int = MAX_SPARES, spare_ttl_s: float = SPARE_TTL_S, clock=time.monotonic) -> None:
        self.shared = shared
        self.max_spares = max_spares
        self.spare_ttl_s = spare_ttl_s
        self.clock = clock
        self._spares: deque[_Spare] = deque()
        self._in_flight = 0  # grants handed out here and not settled yet
        self._settles: list[tuple[int, int | None, float | None]] = []
        self._sender: asyncio.Task | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._recent: deque[float] = deque()  # times of this lease's acquires in the last second
        self.fetches = 0  # acquire_many calls made (what the spares saved is granted - fetches)

    async def acquire(self, tokens: int, cost_usd: float = 0.0) -> Grant:
        now = self.clock()
        self._expire()
        self._recent.append(now)
        while self._recent[0] < now - 1.0:
            self._recent.popleft()
        spare = self._take_spare(tokens, cost_usd)
        if spare is None:
            # this call, and a spare for each call in flight here or coming soon at the recent rate
            want = 1 + min(self.max_spares, max(self._in_flight, math.ceil(len(self._recent) * LOOKAHEAD_S)))
            self.fetches += 1
            grants = await self.shared.acquire_many(want, tokens, cost_usd)
            spare, extra = grants[0], grants[1:]
            now = self.clock()
            self._spares.extend(_Spare(g, now) for g in extra)
            if extra:
                self._schedule_expiry()
        if spare.ok:
            self._in_flight += 1
        return spare

    async def settle(self, grant_id: int, tokens_used: int | None, cost_usd: float | None) -> None:
        """Queued, sent with the settles queued meanwhile (one actor call in flight at a time)."""
        self._in_flight = max(0, self._in_flight - 1)
        self._settles.append((grant_id, tokens_used, cost_usd))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_settles())

    async def throttled(self, grant_id: int, retry_after_s: float | None = None) -> None:
        await self.shared.throttled(grant_id, retry_after_s)
        await self._release(self._drop_spares())

    def snapshot(self) -> LimiterStats:
        return self.shared.snapshot()

    async def close(self) -> None:
        """Give every spare back and send the queued settles."""
        await self._release(self._drop_spares())
        if self._sender is not None and not self._sender.done():
            await self._sender
        if self._settles:
            await self._send_settles()

    def _drop_spares(self) -> list[int]:
        """Every spare's id, the spares forgotten at once (before any await: one fetched meanwhile is kept, not leaked)."""
        ids = [s.grant.id for s in self._spares]
        self._spares.clear()
        return ids

    def _take_spare(self, tokens: int, cost_usd: float) -> Grant | None:
        for i, s in enumerate(self._spares):
            if s.grant.tokens >= tokens and s.grant.cost_usd >= cost_usd:
                del self._spares[i]
                return s.grant
        return None

    async def _send_settles(self) -> None:
        await asyncio.sleep(SETTLE_BATCH_S)
        while self._settles:
            batch, self._settles = self._settles, []
            try:
                await self.shared.settle_many(batch)
            except Exception as exc:  # the shared limiter is gone: its grants are gone with it
                log.warning("could not settle %d grant(s) with the shared limiter: %s", len(batch), exc)

    def _expire(self) -> None:
        """Release spares older than the TTL (off the caller's path: the release is not awaited)."""
        cutoff = self.clock() - self.spare_ttl_s
        old = []
        while self._spares and self._spares[0].fetched <= cutoff:
            old.append(self._spares.popleft().grant.id)
        if old:
            asyncio.get_running_loop().create_task(self._release(old))
        if self._spares:
            self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        if self._expiry is None or self._expiry.cancelled() or self._expiry.when() <= asyncio.get_running_loop().time():
            self._expiry = asyncio.get_running_loop().call_later(self.spare_ttl_s, self._expire)

    async def _release(self, grant_ids: list[int]) -> None:
        if not grant_ids:
            return
        try:
            await self.shared.release(grant_ids)
        except Exception as exc:
            log.warning("could not release %d spare grant(s): %s", len(grant_ids), exc)
