"""Streaming from an upstream API model (:meth:`ApiCaller.stream`) against our fault server, in
both wire formats: deltas as the server sends them, then one final Result with the stream's usage
and cost; retries only before the first delta; a cut after it ends with the partial text, not
retried; the limiter's grant settled in every case (answer, failure, early close, cancellation)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from harness.generation.anthropic_engine import AnthropicProtocol
from harness.generation.api import ApiCaller, Completion, Delta, Protocol, Secret
from harness.generation.base import Request, Result
from harness.generation.cost import token_cost
from harness.generation.limiter import RateLimiter
from harness.generation.openai_engine import OpenAIProtocol
from harness.generation.testing import FaultPlan, FaultServer, fault_config
from harness.generation.testing.fault_server import answer_text, count_tokens
from harness.generation.testing.protocols import PROTOCOLS

KEY = "sk-stream-test-do-not-leak-0123456789"
PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 4.0}
PROMPT = "alpha beta gamma delta"
N_TOKENS = 8
FORMATS = {"openai": OpenAIProtocol, "anthropic": AnthropicProtocol}


@pytest.fixture(scope="module")
def server():
    with FaultServer(FaultPlan(api_key=KEY, completion_tokens=N_TOKENS, chunk_delay_s=0.002)) as s:
        yield s


def make_caller(server: FaultServer, fmt: str, **limits: Any) -> tuple[ApiCaller, RateLimiter]:
    config = fault_config(server, fmt, api_key_env="ROUTERBENCH_TEST_STREAM_KEY", price=PRICE, limits={"timeout_s": 2.0, **limits})
    limiter = RateLimiter(config.limits)
    return ApiCaller(config, FORMATS[fmt], limiter, Secret(KEY)), limiter


def ask(sample_id: str) -> Request:
    return Request(sample_id, [{"role": "user", "content": PROMPT}], None)


def expected_text() -> str:
    call = PROTOCOLS["openai"].parse({"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16})
    return answer_text(call, N_TOKENS)[0]


async def collect(caller: ApiCaller, request: Request) -> tuple[list[Delta], Result]:
    events = [e async for e in caller.stream(request)]
    assert all(isinstance(e, Delta) for e in events[:-1]) and isinstance(events[-1], Result)
    return events[:-1], events[-1]


def assert_settled(limiter: RateLimiter) -> None:
    assert limiter.stats.in_flight == 0
    assert not limiter._open  # every grant closed


async def until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("fmt", FORMATS)
def test_deltas_make_the_answer_with_usage_and_cost(server: FaultServer, fmt: str) -> None:
    caller, limiter = make_caller(server, fmt)
    sid = f"whole-{fmt}"
    deltas, result = asyncio.run(collect(caller, ask(sid)))
    text = expected_text()
    assert result.ok, result.error_detail
    assert "".join(d.text for d in deltas) == result.response == text
    assert len(deltas) == N_TOKENS  # a delta per chunk sent
    prompt_tokens = count_tokens(PROMPT) + 3
    assert (result.input_tokens, result.output_tokens) == (prompt_tokens, N_TOKENS)
    assert result.cost_usd == pytest.approx(token_cost(caller.config.price, prompt_tokens, N_TOKENS))
    assert result.attempts == 1 and result.latency_s is not None and result.latency_s > 0
    assert server.ledger.outcomes(sid) == ["ok"] and server.ledger.served()[sid] == 1
    body = server.ledger.bodies[sid]
    assert body["stream"] is True
    if fmt == "openai":
        assert body["stream_options"] == {"include_usage": True}
    assert_settled(limiter)
    assert limiter.stats.tokens_used == prompt_tokens + N_TOKENS
    assert limiter.stats.spent_usd == pytest.approx(result.cost_usd)


@pytest.mark.parametrize("fmt", FORMATS)
def test_first_delta_arrives_while_the_rest_is_held(server: FaultServer, fmt: str) -> None:
    caller, limiter = make_caller(server, fmt)
    sid = f"held-{fmt}"
    release = server.hold(sid, after_chunks=1)  # the server sends one chunk, then waits for us

    async def run() -> tuple[Delta, list]:
        stream = caller.stream(ask(sid))
        first = await asyncio.wait_for(anext(stream), 5)
        assert isinstance(first, Delta)
        assert server.ledger.outcomes(sid) == []  # the answer is not finished on the server
        assert limiter.stats.in_flight == 1
        release.set()
        return first, [e async for e in stream]

    first, rest = asyncio.run(run())
    result = rest[-1]
    assert isinstance(result, Result) and result.ok
    assert first.text + "".join(d.text for d in rest[:-1]) == result.response == expected_text()
    assert server.ledger.outcomes(sid) == ["ok"]
    assert_settled(limiter)


def test_chunk_delay_spreads_the_deltas() -> None:
    with FaultServer(FaultPlan(completion_tokens=6, chunk_delay_s=0.05)) as slow:
        caller, _ = make_caller(slow, "openai")

        async def run() -> list[float]:
            times = []
            async for _ in caller.stream(ask("slow")):
                times.append(time.monotonic())
            return times

        times = asyncio.run(run())
    assert len(times) == 7  # six deltas and the result
    assert times[-1] - times[0] >= 0.2  # the first came about 5 delays before the last


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", ["500", "429:0.05", "529", "drop", "malformed", "cut:0"])
def test_failure_before_the_first_delta_is_retried(server: FaultServer, fmt: str, fault: str) -> None:
    caller, limiter = make_caller(server, fmt)
    sid = f"retried-{fault}-{fmt}"
    server.script(sid, [fault])
    deltas, result = asyncio.run(collect(caller, ask(sid)))
    assert result.ok, result.error_detail
    assert result.attempts == 2
    assert "".join(d.text for d in deltas) == result.response == expected_text()  # nothing sent twice
    assert server.ledger.outcomes(sid) == [fault.partition(":")[0], "ok"]
    assert limiter.stats.granted == 2
    assert limiter.stats.throttled == (1 if fault.startswith("429") else 0)
    assert_settled(limiter)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_stall_before_the_first_delta_is_retried(server: FaultServer, fmt: str) -> None:
    caller, limiter = make_caller(server, fmt, timeout_s=0.3)
    sid = f"stall-first-{fmt}"
    server.hold(sid, after_chunks=0)  # headers, then nothing: the read times out
    deltas, result = asyncio.run(collect(caller, ask(sid)))
    assert result.ok and result.attempts == 2, result.error_detail
    assert "".join(d.text for d in deltas) == result.response == expected_text()
    assert_settled(limiter)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_cut_after_the_first_delta_ends_the_stream_unretried(server: FaultServer, fmt: str) -> None:
    caller, limiter = make_caller(server, fmt)
    sid = f"cut-{fmt}"
    server.script(sid, ["cut:3"])
    deltas, result = asyncio.run(collect(caller, ask(sid)))
    partial = " ".join(expected_text().split(" ")[:3])
    assert not result.ok and result.error == "connection", result.error_detail
    assert len(deltas) == 3 and "".join(d.text for d in deltas) == result.response == partial
    assert result.attempts == 1
    assert server.ledger.outcomes(sid) == ["cut"]  # one call: not retried
    assert KEY not in (result.error_detail or "")
    assert_settled(limiter)
    assert limiter.stats.tokens_used == limiter.stats.tokens_reserved  # no usage came: the worst case stands


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_stall_after_the_first_delta_fails_with_the_partial_text(server: FaultServer, fmt: str) -> None:
    caller, limiter = make_caller(server, fmt, timeout_s=0.3)
    sid = f"stall-mid-{fmt}"
    server.hold(sid, after_chunks=2)  # never released: the client's read times out
    deltas, result = asyncio.run(collect(caller, ask(sid)))
    assert result.error == "timeout" and result.attempts == 1, result.error_detail
    assert len(deltas) == 2 and result.response == "".join(d.text for d in deltas)
    assert_settled(limiter)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_error_that_is_not_retried_comes_as_a_failed_result(server: FaultServer, fmt: str) -> None:
    caller, limiter = make_caller(server, fmt)
    sid = f"bad-{fmt}"
    server.script(sid, ["400"])
    deltas, result = asyncio.run(collect(caller, ask(sid)))
    assert deltas == [] and result.error == "bad_request" and result.attempts == 1
    assert result.response is None
    assert_settled(limiter)


def test_spend_cap_comes_as_a_failed_result(server: FaultServer) -> None:
    caller, limiter = make_caller(server, "openai", max_spend_usd=1e-9)
    deltas, result = asyncio.run(collect(caller, ask("capped")))
    assert deltas == [] and result.error == "spend_cap"
    assert server.ledger.outcomes("capped") == []
    assert_settled(limiter)


@pytest.mark.parametrize("fmt", FORMATS)
def test_early_close_by_the_consumer_settles_the_grant(server: FaultServer, fmt: str) -> None:
    caller, limiter = make_caller(server, fmt)
    sid = f"closed-{fmt}"
    release = server.hold(sid, after_chunks=2)

    async def run() -> None:
        stream = caller.stream(ask(sid))
        got = [await anext(stream), await anext(stream)]
        assert all(isinstance(e, Delta) for e in got)
        assert limiter.stats.in_flight == 1
        await stream.aclose()
        assert_settled(limiter)  # at once, not when the server notices
        await until(lambda: server.ledger.outcomes(sid) == ["client_gone"])

    try:
        asyncio.run(run())
    finally:
        release.set()
    assert caller.slots._value == caller.config.limits.max_concurrency  # the slot is back too
    assert limiter.stats.tokens_used == limiter.stats.tokens_reserved  # unknown usage: the worst case stands


@pytest.mark.parametrize("fmt", FORMATS)
def test_cancelling_the_consumer_settles_the_grant(server: FaultServer, fmt: str) -> None:
    caller, limiter = make_caller(server, fmt)
    sid = f"cancelled-{fmt}"
    release = server.hold(sid, after_chunks=1)

    async def run() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for event in caller.stream(ask(sid)):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_settled(limiter)

    try:
        asyncio.run(run())
    finally:
        release.set()


def test_answer_without_streaming_is_unchanged(server: FaultServer) -> None:
    caller, limiter = make_caller(server, "openai")
    result = asyncio.run(caller.answer(ask("plain")))
    assert result.ok and result.response == expected_text() and result.attempts == 1
    assert "stream" not in server.ledger.bodies["plain"]
    assert_settled(limiter)


def test_a_cut_fault_drops_a_call_that_does_not_stream(server: FaultServer) -> None:
    caller, limiter = make_caller(server, "openai")
    server.script("plain-cut", ["cut:2"])
    result = asyncio.run(caller.answer(ask("plain-cut")))
    assert result.ok and result.attempts == 2
    assert server.ledger.outcomes("plain-cut") == ["drop", "ok"]
    assert_settled(limiter)


class OnlyComplete(Protocol):
    """A protocol without a streaming call of its own."""

    def make_client(self, key: str) -> Any:
        return None

    async def complete(self, client: Any, request: Request) -> Completion:
        return Completion("all at once", 3, 4)


def test_a_protocol_without_streaming_streams_one_delta() -> None:
    config = fault_config(FaultServer(), "openai", price=PRICE)  # never started: nothing is called
    limiter = RateLimiter(config.limits)
    caller = ApiCaller(config, OnlyComplete, limiter, Secret("EMPTY"))
    deltas, result = asyncio.run(collect(caller, ask("fallback")))
    assert deltas == [Delta("all at once")]
    assert (result.response, result.input_tokens, result.output_tokens, result.attempts) == ("all at once", 3, 4, 1)
    assert_settled(limiter)
