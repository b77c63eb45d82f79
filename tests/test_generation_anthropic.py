"""The anthropic engine (official SDK) against the fault server's Anthropic Messages protocol:
system prompt, stop sequences and usage mapped; retries and no-retries; the key as x-api-key."""

from __future__ import annotations

import pytest

from harness.generation import Request, build_engine
from harness.generation.testing import FaultPlan, FaultServer, fault_config
from harness.generation.testing.fault_server import count_tokens

KEY_ENV = "ROUTERBENCH_TEST_ANTHROPIC_KEY"
KEY = "sk-ant-test-do-not-leak-987"
PRICE = {"input_per_mtok": 3.0, "output_per_mtok": 15.0}


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


@pytest.fixture(scope="module")
def answered(ray_local):
    with pytest.MonkeyPatch.context() as mp, FaultServer(FaultPlan(api_key=KEY, completion_tokens=12)) as server:
        mp.setenv(KEY_ENV, KEY)
        server.script("overloaded", ["529", "500"])
        server.script("limited", ["429:0.2"])
        server.script("unauthorised", ["401"])
        server.script("missing", ["404"])
        config = fault_config(
            server,
            protocol="anthropic",
            api_key_env=KEY_ENV,
            price=PRICE,
            sampling={"temperature": 0.2, "max_tokens": 12, "stop": ["HALT"], "top_p": 0.9},
            chat={"system": "default system"},
        )
        batch = [
            Request("own-system", turns(("system", "You are terse."), ("user", "alpha beta gamma"))),
            Request("default-system", turns(("user", "delta epsilon"))),
            Request("multi-turn", turns(("user", "first"), ("assistant", "reply"), ("user", "second question"))),
            Request("stopped", turns(("user", "one two HALT three"))),
            Request("overloaded", turns(("user", "x"))),
            Request("limited", turns(("user", "y"))),
            Request("unauthorised", turns(("user", "z"))),
            Request("missing", turns(("user", "w"))),
        ]
        with build_engine(config) as engine:
            results = {r.sample_id: r for r in engine.generate(batch)}
        yield server, results


def test_system_prompt_goes_top_level(answered) -> None:
    server, results = answered
    body = server.ledger.bodies["own-system"]
    assert body["system"] == "You are terse."
    assert body["messages"] == [{"role": "user", "content": "alpha beta gamma"}]
    assert server.ledger.bodies["default-system"]["system"] == "default system"
    assert [m["role"] for m in server.ledger.bodies["multi-turn"]["messages"]] == ["user", "assistant", "user"]
    assert results["multi-turn"].response.startswith("second question")


def test_sampling_and_stop_sequences_map(answered) -> None:
    server, results = answered
    body = server.ledger.bodies["stopped"]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop_sequences"]) == (12, 0.2, 0.9, ["HALT"])
    r = results["stopped"]
    assert r.ok and r.response == "one two " and r.output_tokens == 2


def test_usage_and_cost(answered) -> None:
    _, results = answered
    r = results["own-system"]
    prompt_tokens = count_tokens("You are terse.") + count_tokens("alpha beta gamma") + 3 * 2
    assert (r.input_tokens, r.output_tokens) == (prompt_tokens, 12)
    assert r.cost_usd == pytest.approx((prompt_tokens * 3.0 + 12 * 15.0) / 1e6)


def test_key_is_sent(answered) -> None:
    server, results = answered
    headers = server.ledger.headers["own-system"]
    assert KEY in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert all(KEY not in (r.error_detail or "") for r in results.values())


@pytest.mark.parametrize(
    ("sample_id", "error", "attempts"),
    [("overloaded", None, 3), ("limited", None, 2), ("unauthorised", "auth", 1), ("missing", "not_found", 1)],
)
def test_retries(answered, sample_id: str, error: str | None, attempts: int) -> None:
    server, results = answered
    r = results[sample_id]
    assert (r.error, r.attempts) == (error, attempts), r.error_detail
    assert len(server.ledger.outcomes(sample_id)) == attempts
