"""The leasing view of the shared limiter: fewer limiter calls, the same caps.

The shared limiter here is the real :class:`RateLimiter` in-process (the actor runs the same
class); the call counter wraps it to count what would be actor round trips."""

from __future__ import annotations

import asyncio

import pytest

from harness.generation.lease import LeasingLimiter
from harness.generation.limiter import RateLimiter, get_limiter
from harness.model_config import Limits


class Counted:
    """The shared limiter, counting the calls a Ray actor would receive."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str):
        method = getattr(self.limiter, name)

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return counted


async def _call(lease: LeasingLimiter, used: int = 10, cost: float | None = 0.001, hold_s: float = 0.01, tokens: int = 100, worst: float = 0.002) -> bool:
    grant = await lease.acquire(tokens, worst)
    if not grant.ok:
        return False
    await asyncio.sleep(hold_s)
    await lease.settle(grant.id, used, cost)
    return True


def test_concurrent_calls_take_spares_instead_of_asking_each_time() -> None:
    shared = Counted(RateLimiter(Limits(max_concurrency=64)))
    lease = LeasingLimiter(shared)

    async def run() -> None:
        slots = asyncio.Semaphore(4)

        async def one() -> None:
            async with slots:
                await _call(lease)

        await asyncio.gather(*(one() for _ in range(200)))
        await lease.close()

    asyncio.run(run())
    stats = shared.limiter.snapshot()
    assert stats.granted == 200  # spares released at close are not counted as granted
    assert shared.calls["acquire_many"] == lease.fetches < 100  # 4 in flight: about one fetch for every 4 calls
    assert shared.calls["settle_many"] < 200  # settles went out in batches
    assert stats.in_flight == 0 and stats.tokens_used == 200 * 10
    assert stats.spent_usd == pytest.approx(200 * 0.001)


def test_the_spend_cap_holds_with_spares_outstanding() -> None:
    """Each call's worst case is $0.01; the cap allows 10 of them in flight or spent. Spares are
    real grants, so whatever the lease holds the shared limiter never lets the sum pass the cap."""
    shared = RateLimiter(Limits(max_concurrency=100, max_spend_usd=0.1))
    lease = LeasingLimiter(shared)
    peak = 0.0

    async def run() -> int:
        nonlocal peak
        served = 0

        async def one() -> None:
            nonlocal served, peak
            grant = await lease.acquire(10, 0.01)
            if not grant.ok:
                return
            s = shared.snapshot()
            peak = max(peak, s.spent_usd + sum(o.cost_usd for o in shared._open.values()))
            await asyncio.sleep(0.005)
            await lease.settle(grant.id, 10, 0.01)  # every call costs its worst case
            served += 1

        await asyncio.gather(*(one() for _ in range(40)))
        await lease.close()
        return served

    served = asyncio.run(run())
    assert served == 10
    assert peak <= 0.1 + 1e-12
    assert shared.snapshot().spent_usd == pytest.approx(0.1)


def test_unused_spares_go_back_after_their_ttl() -> None:
    shared = RateLimiter(Limits(requests_per_min=6, burst_s=60, max_concurrency=64))  # 6 requests deep, refilling 0.1/s
    lease = LeasingLimiter(shared, spare_ttl_s=0.05)

    async def run() -> int:
        first = await lease.acquire(100, 0.0)  # at the recent rate another call is due soon: it comes with a spare
        held = len(lease._spares)
        await lease.settle(first.id, 10, 0.0)
        await asyncio.sleep(0.2)  # idle: the expiry timer releases the spare
        await lease.close()
        return held

    assert asyncio.run(run()) == 1
    stats = shared.snapshot()
    assert not lease._spares and stats.in_flight == 0
    assert stats.granted == 1 and stats.tokens_reserved == 100 and stats.tokens_used == 10
    assert shared._requests.level == pytest.approx(6 - 1, abs=0.05)  # the spare's request is back in the bucket


def test_a_call_larger_than_the_spares_asks_for_its_own_grant() -> None:
    shared = Counted(RateLimiter(Limits(max_concurrency=64)))
    lease = LeasingLimiter(shared)

    async def run() -> None:
        await asyncio.gather(*(_call(lease, tokens=100, hold_s=0.02) for _ in range(4)))
        before = shared.calls["acquire_many"]
        grant = await lease.acquire(10_000, 0.5)
        assert grant.tokens == 10_000 and shared.calls["acquire_many"] == before + 1
        await lease.settle(grant.id, 10_000, 0.5)
        await lease.close()

    asyncio.run(run())
    assert shared.limiter.snapshot().in_flight == 0


def test_a_429_drops_the_spares_so_its_pause_is_not_skipped() -> None:
    shared = RateLimiter(Limits(requests_per_min=600, max_concurrency=64))
    lease = LeasingLimiter(shared, spare_ttl_s=10.0)

    async def run() -> None:
        grant = await lease.acquire(100, 0.0)  # comes with a spare
        spares = len(lease._spares)
        await lease.throttled(grant.id, retry_after_s=5.0)
        await lease.settle(grant.id, 0, 0.0)
        assert spares == 1 and not lease._spares
        await lease.close()

    asyncio.run(run())
    assert shared.snapshot().in_flight == 0 and shared.snapshot().throttled == 1


def test_acquire_many_never_jumps_the_queue_nor_waits_for_more() -> None:
    shared = RateLimiter(Limits(max_concurrency=3))

    async def run() -> None:
        grants = await shared.acquire_many(5, 10)
        assert len(grants) == 3  # the cap, not the ask
        waiter = asyncio.create_task(shared.acquire(10))
        await asyncio.sleep(0.01)
        await shared.settle(grants[0].id, 10, 0.0)
        late = asyncio.create_task(shared.acquire_many(4, 10))
        assert (await waiter).ok  # the one who waited first got the freed slot
        await shared.settle(grants[1].id, 10, 0.0)
        assert len(await late) == 1  # one slot was free: one grant, not a wait for four
        await shared.release([g.id for g in grants[2:]])

    asyncio.run(run())


@pytest.mark.slow
def test_the_shared_limiter_actor_answers_a_lease(ray_local) -> None:  # noqa: ARG001 - a local Ray
    shared = get_limiter("limiter:test:lease", Limits(max_concurrency=32))
    lease = LeasingLimiter(shared)

    async def run() -> None:
        await asyncio.gather(*(_call(lease) for _ in range(40)))
        await lease.close()

    asyncio.run(run())
    stats = shared.snapshot()
    assert stats.granted == 40 and stats.in_flight == 0 and stats.tokens_used == 400
