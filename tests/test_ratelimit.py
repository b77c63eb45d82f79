"""The shared rate limiter: bucket arithmetic on a virtual clock, concurrency and spend caps, the
adaptive rate (429s cut it, quiet time wins it back), the named Ray actor, and pacing real traffic
against the fault server's own limits."""

from __future__ import annotations

import asyncio
import time

import pytest

from harness.generation import Request, build_engine
from harness.generation.limiter import NAMESPACE, AdaptiveRate, RateLimiter, TokenBucket, get_limiter, limiter_name
from harness.generation.testing import FaultPlan, FaultServer, fault_config
from harness.model_config import Limits


class VirtualTime:
    """A clock that only moves when the limiter sleeps: waits are exact and instant."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def limiter(vt: VirtualTime, **limits) -> RateLimiter:
    return RateLimiter(Limits(**limits), clock=vt.clock, sleep=vt.sleep)


def test_token_bucket_refills_and_goes_into_debt() -> None:
    b = TokenBucket.per_minute(600, burst_s=1.0, now=0.0)  # 10/s, 10 deep
    assert (b.capacity, b.level) == (10, 10)
    b.take(10)
    assert b.wait_s(5, now=0.0) == pytest.approx(0.5)
    assert b.wait_s(5, now=0.5) == 0.0
    b.take(25)  # more than it holds: debt, repaid by refill
    assert b.level == pytest.approx(-20)
    assert b.wait_s(1, now=0.5) == pytest.approx(2.1)
    assert b.wait_s(1000, now=10.0) == 0.0  # beyond capacity: waits for a full bucket, then goes
    unlimited = TokenBucket.per_minute(None, 1.0, 0.0)
    unlimited.take(10**9)
    assert unlimited.wait_s(10**9, now=0.0) == 0.0


def test_requests_are_paced_at_the_rate_after_the_burst() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_min=600, burst_s=1.0)

    async def run() -> None:
        for _ in range(70):
            g = await lim.acquire(1)
            await lim.settle(g.id, 1, 0.0)

    asyncio.run(run())
    assert vt.now == pytest.approx(6.0)  # 10 at once, then 60 at 10/s
    assert lim.stats.granted == 70


def test_tokens_reserved_then_corrected_by_reported_usage() -> None:
    vt = VirtualTime()
    lim = limiter(vt, tokens_per_min=6000, burst_s=1.0)  # 100 tokens/s, 100 deep

    async def run() -> None:
        g = await lim.acquire(100)  # prompt estimate + max_tokens
        assert vt.now == 0.0
        await lim.settle(g.id, 40, 0.0)  # used 40: 60 come back
        g = await lim.acquire(80)
        assert vt.now == pytest.approx(0.2)  # 60 there, 20 more at 100/s
        await lim.settle(g.id, 150, 0.0)  # used more than reserved: 70 of debt
        g = await lim.acquire(10)
        assert vt.now == pytest.approx(0.2 + 0.8)
        await lim.settle(g.id, None, None)  # unknown usage: the reservation stands

    asyncio.run(run())
    assert (lim.stats.tokens_reserved, lim.stats.tokens_used) == (190, 200)


def test_concurrency_cap_holds_under_contention() -> None:
    lim = RateLimiter(Limits(max_concurrency=3))
    active, peak = 0, 0

    async def call() -> None:
        nonlocal active, peak
        g = await lim.acquire(1)
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        await lim.settle(g.id, 1, 0.0)

    async def run() -> None:
        await asyncio.gather(*(call() for _ in range(12)))

    asyncio.run(run())
    assert peak == 3 and lim.stats.max_in_flight == 3 and lim.stats.granted == 12


def test_waiters_are_served_in_arrival_order() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_min=60, burst_s=1.0)  # one per second
    order: list[int] = []

    async def call(i: int) -> None:
        g = await lim.acquire(1)
        order.append(i)
        await lim.settle(g.id, 1, 0.0)

    async def run() -> None:
        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(call(i)))
            await asyncio.sleep(0)  # arrive in this order
        await asyncio.gather(*tasks)

    asyncio.run(run())
    assert order == list(range(6))


def test_spend_cap_waits_for_calls_in_flight_then_refuses() -> None:
    lim = RateLimiter(Limits(max_spend_usd=1.0))

    async def run() -> None:
        a = await lim.acquire(10, 0.4)
        b = await lim.acquire(10, 0.4)  # 0.8 of worst case in flight
        third = asyncio.create_task(lim.acquire(10, 0.4))  # would make 1.2: must wait
        await asyncio.sleep(0.01)
        assert not third.done()
        await lim.settle(a.id, 10, 0.1)  # a cost 0.1: 0.1 + 0.4 + 0.4 fits
        c = await asyncio.wait_for(third, 1)
        assert c.ok
        await lim.settle(b.id, 10, 0.4)
        await lim.settle(c.id, 10, 0.4)  # spent 0.9
        refused = await lim.acquire(10, 0.4)
        assert not refused.ok and refused.reason == "spend_cap"
        cheap = await lim.acquire(1, 0.05)  # still fits in what is left
        assert cheap.ok

    asyncio.run(run())
    assert lim.stats.spent_usd == pytest.approx(0.9) and lim.stats.refused == 1


def test_a_429_cuts_the_rate_by_30_percent_and_quiet_time_wins_it_back() -> None:
    rate = AdaptiveRate(configured=300)
    assert rate.rate(0.0) == 300
    assert rate.throttled(10.0, grant_id=5, last_grant_id=8)
    assert rate.rate(10.0) == pytest.approx(210)
    assert not rate.throttled(10.5, grant_id=8, last_grant_id=9)  # sent at the old rate: no news
    assert rate.rate(20.0) == pytest.approx(210 + 10 * 3)  # +1 % of 300 a second
    assert rate.throttled(20.0, grant_id=9, last_grant_id=12)  # sent after the cut: still too fast
    assert rate.rate(20.0) == pytest.approx(240 * 0.7)
    assert rate.rate(20.0 + 3600) == 300  # never above the configured rate
    for i in range(30):
        rate.throttled(30.0, grant_id=100 + i, last_grant_id=100 + i)
    assert rate.rate(30.0) == pytest.approx(3)  # floor: 1 % of the configured rate
    assert rate.cuts == 32


def test_without_a_configured_rate_the_first_429_starts_from_the_observed_one() -> None:
    rate = AdaptiveRate(configured=None)
    for i in range(100):  # 20 grants a second for 5 s: 1200/min
        rate.granted(i * 0.05)
    assert rate.rate(5.0) is None  # unlimited until told otherwise
    assert rate.throttled(5.0, grant_id=100, last_grant_id=100)
    assert rate.reference == pytest.approx(1200)
    assert rate.rate(5.0) == pytest.approx(840)
    assert rate.rate(65.0) == pytest.approx(840 + 60 * 12)  # no ceiling: it keeps probing upward
    assert rate.throttled(65.0, grant_id=101, last_grant_id=150)
    assert (rate.reference, rate.rate(75.0)) == (pytest.approx(1560), pytest.approx(1560 * 0.7 + 10 * 15.6))


def test_a_429_pauses_every_caller_for_retry_after_then_paces_slower() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_min=600, burst_s=1.0)  # 10/s, 10 deep

    async def call() -> int:
        grant = await lim.acquire(1)
        await lim.settle(grant.id, 1, 0.0)
        return grant.id

    async def run() -> tuple[float, float]:
        burst = [await call() for _ in range(10)]
        assert vt.now == 0.0
        await lim.throttled(burst[-1], retry_after_s=2.0)
        await lim.throttled(burst[0], retry_after_s=0.5)  # granted before the cut: pause only
        await call()
        resumed = vt.now
        for _ in range(42):
            await call()
        return resumed, vt.now - resumed

    resumed, paced = asyncio.run(run())
    assert 2.0 < resumed <= 2.0 + 60 / 420 + 1e-6  # nothing before retry-after, and no burst after it
    assert 42 * 60 / 480 <= paced <= 42 * 60 / 420 + 1e-6  # 420/min, recovering by 6/min a second
    stats = lim.snapshot()
    assert (stats.throttled, stats.rate_cuts) == (2, 1)
    assert 420 < stats.requests_per_min < 480
    vt.now += 3600
    assert lim.snapshot().requests_per_min == 600


def test_limiter_name_hides_the_key() -> None:
    a = limiter_name("openai", None, "sk-secret-1", "gpt-x")
    assert "sk-secret" not in a and a.startswith("limiter:openai:") and a.endswith(":gpt-x")
    assert a == limiter_name("openai", None, "sk-secret-1", "gpt-x")
    assert a != limiter_name("openai", None, "sk-secret-2", "gpt-x")


def test_named_actor_is_shared_across_processes(ray_local) -> None:
    ray = ray_local
    name = f"limiter:test:{time.time_ns()}"
    first = get_limiter(name, Limits(requests_per_min=6000))
    assert get_limiter(name, Limits()) is first

    @ray.remote(num_cpus=0)
    def use_from_a_task(actor_name: str) -> int:
        handle = ray.get_actor(actor_name, namespace=NAMESPACE)
        grant = ray.get(handle.acquire.remote(5, 0.0))
        ray.get(handle.settle.remote(grant.id, 5, 0.0))
        return grant.id

    ids = ray.get([use_from_a_task.remote(name) for _ in range(3)])
    assert sorted(ids) == [1, 2, 3]
    stats = first.snapshot()
    assert (stats.granted, stats.tokens_used, stats.in_flight) == (3, 15, 0)


def _batch(n: int, tag: str) -> list[Request]:
    return [Request(f"{tag}-{i}", [{"role": "user", "content": f"count to {i}"}]) for i in range(n)]


def test_engine_paces_to_the_server_limit_without_429s(ray_local) -> None:
    """Two workers share one limiter at 1200 requests/min: 60 requests take ≥ 2 s and the server,
    enforcing the same limit, never has to refuse one."""
    with FaultServer(FaultPlan(requests_per_min=1200, tokens_per_min=200_000)) as server:
        config = fault_config(server, name="paced", limits={"requests_per_min": 1200, "tokens_per_min": 200_000, "max_concurrency": 16}, resources={"replicas": 2})
        with build_engine(config) as engine:
            engine.start()
            start = time.monotonic()
            results = engine.generate(_batch(60, "paced"))
            elapsed = time.monotonic() - start
            stats = engine.limiter_stats()
        assert all(r.ok for r in results)
        assert server.ledger.counts() == {"ok": 60}  # no 429
        assert elapsed >= (60 - 20) / 20 * 0.95  # 20 at once, then 20/s
        assert stats.granted == 60  # both workers went through the one limiter


def test_a_stricter_server_is_handled_by_retry_after(ray_local) -> None:
    """The limiter does not know the server's limit: 429s come back with retry-after, are
    retried, and every request is still answered exactly once."""
    with FaultServer(FaultPlan(requests_per_min=600, burst_s=0.5)) as server:
        config = fault_config(server, name="strict", limits={"max_concurrency": 8, "max_retries": None})
        with build_engine(config) as engine:
            results = engine.generate(_batch(25, "strict"))
        assert all(r.ok for r in results), [r.error_detail for r in results if not r.ok]
        assert server.ledger.counts()["429"] > 0
        assert set(server.ledger.served().values()) == {1} and len(server.ledger.served()) == 25


def test_a_server_stricter_than_the_config_slows_the_shared_limiter(ray_local) -> None:
    """The config claims 3000 requests/min, the server allows 600: its 429s cut the one limiter
    both workers share, so most calls go through instead of most being refused."""
    with FaultServer(FaultPlan(requests_per_min=600, burst_s=0.5)) as server:
        config = fault_config(server, name="claims-too-much", limits={"requests_per_min": 3000, "max_concurrency": 8, "max_retries": None}, resources={"replicas": 2})
        with build_engine(config) as engine:
            results = engine.generate(_batch(40, "claims"))
            stats = engine.limiter_stats()
        counts = server.ledger.counts()
    assert all(r.ok for r in results) and set(server.ledger.served().values()) == {1}
    assert stats.rate_cuts >= 1 and stats.requests_per_min < 3000 * 0.7
    assert stats.throttled == counts["429"]  # every 429 reached the shared limiter
    assert counts["429"] <= 0.25 * sum(counts.values())  # unadapted, about 4 in 5 would be refused
