"""The openai engine (official SDK, Ray worker actors, shared limiter) against our fault server:
every retry and no-retry case, usage and cost, the request body, the key, the spend cap, a storm
of random faults in which nothing is lost or answered twice, a server failing half of all
attempts (every prompt still answered once), and the retry deadline."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from harness.errors import UserError
from harness.generation import Request, build_engine
from harness.generation.testing import FaultPlan, FaultServer, fault_config
from harness.generation.testing.fault_server import count_tokens

KEY_ENV = "ROUTERBENCH_TEST_OPENAI_KEY"
KEY = "sk-test-do-not-leak-0123456789"

# sample_id: (scripted outcomes, expected error kind, expected attempts)
CASES = {
    "ok": ([], None, 1),
    "500-then-ok": (["500"], None, 2),
    "502-503-then-ok": (["502", "503"], None, 3),
    "529-then-ok": (["529"], None, 2),
    "429-then-ok": (["429:1"], None, 2),
    "timeout-then-ok": (["timeout"], None, 2),
    "drop-then-ok": (["drop"], None, 2),
    "malformed-then-ok": (["malformed"], None, 2),
    "400": (["400"], "bad_request", 1),
    "422": (["422"], "bad_request", 1),
    "401": (["401"], "auth", 1),
    "403": (["403"], "auth", 1),
    "404": (["404"], "not_found", 1),
    "500-exhausted": (["500"] * 4, "server_error", 4),
    "429-exhausted": (["429:0.05"] * 4, "rate_limited", 4),
    "timeout-exhausted": (["timeout"] * 4, "timeout", 4),
    "drop-exhausted": (["drop"] * 4, "connection", 4),
    "malformed-exhausted": (["malformed"] * 4, "malformed", 4),
}
PRICE = {"input_per_mtok": 2.0, "output_per_mtok": 4.0}


def ask(sample_id: str, text: str | None = None, max_tokens: int | None = None) -> Request:
    return Request(sample_id, [{"role": "user", "content": text or f"please answer {sample_id}"}], max_tokens)


@pytest.fixture(scope="module")
def scripted(ray_local):
    """One server, one engine, one batch holding every case; tests read the outcome."""
    with pytest.MonkeyPatch.context() as mp, FaultServer(FaultPlan(api_key=KEY, hang_s=1.5)) as server:
        mp.setenv(KEY_ENV, KEY)
        for sample_id, (script, _, _) in CASES.items():
            server.script(sample_id, script)
        config = fault_config(
            server,
            api_key_env=KEY_ENV,
            price=PRICE,
            limits={"timeout_s": 0.5, "max_retries": 3},
            sampling={"temperature": 0.3, "max_tokens": 16, "stop": ["STOP"], "seed": 7},
            chat={"system": "be brief"},
        )
        batch = [ask(s) for s in CASES] + [ask("short", max_tokens=5), ask("stops", "one two STOP three")]
        with build_engine(config) as engine:
            results = engine.generate(batch)
        yield server, {r.sample_id: r for r in results}, [r.sample_id for r in results], batch


@pytest.mark.parametrize("sample_id", list(CASES))
def test_retry_and_no_retry_cases(scripted, sample_id: str) -> None:
    server, results, _, _ = scripted
    script, error, attempts = CASES[sample_id]
    r = results[sample_id]
    assert (r.error, r.attempts) == (error, attempts), r.error_detail
    seen = server.ledger.outcomes(sample_id)
    assert len(seen) == attempts
    assert seen[: len(script)] == [s.partition(":")[0] for s in script]
    assert server.ledger.served()[sample_id] == (1 if error is None else 0)
    if error is None:
        assert r.response and r.latency_s > 0
    else:
        assert r.response is None and r.cost_usd is None and r.error_detail


def test_results_come_back_in_request_order_once_each(scripted) -> None:
    _, _, order, batch = scripted
    assert order == [r.sample_id for r in batch]


def test_retry_after_is_honoured(scripted) -> None:
    server, _, _, _ = scripted
    first, second = server.ledger.times("429-then-ok")
    assert second - first >= 1.0


def test_usage_and_cost_from_the_reported_tokens(scripted) -> None:
    _, results, _, _ = scripted
    r = results["ok"]
    prompt_tokens = count_tokens("be brief") + count_tokens("please answer ok") + 3 * 2  # the server's count
    assert (r.input_tokens, r.output_tokens) == (prompt_tokens, 16)
    assert r.cost_usd == pytest.approx((prompt_tokens * 2.0 + 16 * 4.0) / 1e6)
    assert results["short"].output_tokens == 5


def test_request_body_carries_sampling_system_prompt_and_stop(scripted) -> None:
    server, results, _, _ = scripted
    body = server.ledger.bodies["ok"]
    assert (body["model"], body["temperature"], body["max_tokens"], body["stop"], body["seed"]) == ("fault-model", 0.3, 16, ["STOP"], 7)
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "please answer ok"}]
    assert server.ledger.bodies["short"]["max_tokens"] == 5
    assert "STOP" not in results["stops"].response and results["stops"].response.startswith("one two")


def test_key_is_sent_and_never_shown(scripted) -> None:
    server, results, _, _ = scripted
    assert server.ledger.headers["ok"]["authorization"] == f"Bearer {KEY}"
    assert server.ledger.headers["ok"]["x-routerbench-sample-id"] == "ok"
    for r in results.values():
        assert KEY not in repr(r) and KEY not in (r.error_detail or "")


def test_missing_key_variable_names_file_and_field(ray_local, tmp_path) -> None:
    with FaultServer() as server:
        config = fault_config(server, api_key_env="ROUTERBENCH_SURELY_UNSET", source=str(tmp_path / "m.yaml"))
        with build_engine(config) as engine, pytest.raises(UserError, match=r"m.yaml: field 'api_key_env': environment variable ROUTERBENCH_SURELY_UNSET is not set"):
            engine.generate([ask("x")])


def test_random_faults_lose_and_duplicate_nothing(ray_local) -> None:
    plan = FaultPlan(error_rate=0.10, drop_rate=0.03, malformed_rate=0.03, timeout_rate=0.02, hang_s=1.0, delay_s=(0.0, 0.02), seed=3)
    with FaultServer(plan) as server:
        for i, kind in enumerate(["timeout", "drop", "malformed", "500"]):  # each kind at least once
            server.script(f"storm-{i}", [kind])
        config = fault_config(server, limits={"timeout_s": 0.5, "max_retries": 8, "max_concurrency": 16}, resources={"replicas": 2})
        batch = [ask(f"storm-{i}") for i in range(150)]
        with build_engine(config) as engine:
            results = list(engine.stream(batch))
        outcomes = server.ledger.counts()
    assert Counter(r.sample_id for r in results) == Counter(r.sample_id for r in batch)
    assert all(r.ok for r in results), Counter(r.error for r in results)
    assert set(server.ledger.served().values()) == {1} and len(server.ledger.served()) == 150
    assert outcomes["500"] > 0 and outcomes["drop"] > 0 and outcomes["malformed"] > 0 and outcomes["timeout"] > 0
    # Every attempt the server saw was one the client counted; on a loaded machine an attempt can
    # time out (0.5 s) while still queued for the server's accept, and the server never sees it.
    assert sum(outcomes.values()) <= sum(r.attempts for r in results) <= sum(outcomes.values()) + 5


def test_half_of_all_attempts_failing_still_answers_every_prompt_once(ray_local) -> None:
    """Retries run until success, not for a fixed count: 429s with and without retry-after, 500s,
    malformed bodies and dropped connections on half of all attempts cost no prompt its answer."""
    plan = FaultPlan(throttle_rate=0.1, bare_throttle_rate=0.1, throttle_retry_after_s=0.1, error_rate=0.1, malformed_rate=0.1, drop_rate=0.1, seed=11)
    stubborn = ["429:none", "500", "malformed", "drop", "429:0.1", "503", "malformed", "drop"]  # 8 in a row
    with FaultServer(plan) as server:
        server.script("hostile-stubborn", stubborn)
        config = fault_config(server, name="hostile", limits={"requests_per_min": 60_000, "max_retries": None, "max_concurrency": 8}, resources={"replicas": 2})
        batch = [ask(f"hostile-{i}") for i in range(29)] + [ask("hostile-stubborn")]
        with build_engine(config) as engine:
            results = engine.generate(batch)
            stats = engine.limiter_stats()
        outcomes = server.ledger.counts()
    assert [r.sample_id for r in results] == [r.sample_id for r in batch]
    assert all(r.ok for r in results), Counter(r.error for r in results)
    assert server.ledger.served() == Counter({r.sample_id: 1 for r in batch})
    assert sum(r.attempts for r in results) == sum(outcomes.values())
    assert outcomes["ok"] <= 0.65 * sum(outcomes.values())  # it really was that hostile
    assert {"429", "500", "malformed", "drop"} <= outcomes.keys()
    assert next(r for r in results if r.sample_id == "hostile-stubborn").attempts == len(stubborn) + 1
    assert stats.throttled == outcomes["429"]


def test_non_retryable_failures_end_at_once_without_a_retry_cap(ray_local, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")
    with FaultServer(FaultPlan(api_key=KEY)) as server:
        config = fault_config(server, name="wrong-key", api_key_env=KEY_ENV, limits={"max_retries": None})
        with build_engine(config) as engine:
            results = engine.generate([ask("denied-0"), ask("denied-1")])
        assert [(r.error, r.attempts) for r in results] == [("auth", 1), ("auth", 1)]
        assert server.ledger.counts() == {"401": 2}


def test_retries_end_at_the_deadline_with_the_last_error(ray_local) -> None:
    with FaultServer(FaultPlan(error_rate=1.0)) as server:
        config = fault_config(server, name="deadline", limits={"max_retries": None, "retry_deadline_s": 2.0, "backoff_s": 0.05, "max_backoff_s": 0.2})
        with build_engine(config) as engine:
            (r,) = engine.generate([ask("always-500")])
        times = server.ledger.times("always-500")
    assert r.error == "server_error" and r.attempts == len(times)
    assert r.attempts > 7  # more than the old fixed count: the deadline ended it
    assert 1.5 <= times[-1] - times[0] <= 3.0  # the last try near the deadline, none long after


def test_a_retry_after_beyond_the_deadline_ends_the_request_at_once(ray_local) -> None:
    with FaultServer() as server:
        server.script("asks-too-long", ["429:30"])
        config = fault_config(server, name="deadline-429", limits={"max_retries": None, "retry_deadline_s": 2.0})
        with build_engine(config) as engine:
            (r,) = engine.generate([ask("asks-too-long")])
    assert (r.error, r.attempts) == ("rate_limited", 1)  # not a 30 s wait, nor a retry it would refuse


def _spend_run(concurrency: int, n: int = 20) -> tuple[list, FaultServer]:
    # Output costs $0.01 a token; a call may use 10 (worst case $0.10) and the server answers 5 ($0.05).
    with FaultServer(FaultPlan(completion_tokens=5)) as server:
        config = fault_config(
            server,
            name=f"spend-{concurrency}",
            price={"output_per_mtok": 10_000.0},
            limits={"max_spend_usd": 0.52, "max_concurrency": concurrency},
            sampling={"max_tokens": 10},
        )
        with build_engine(config) as engine:
            results = engine.generate([ask(f"spend-{i}") for i in range(n)])
    return results, server


def test_spend_cap_stops_new_calls(ray_local) -> None:
    results, server = _spend_run(concurrency=1)
    ok = [r for r in results if r.ok]
    # calls go while spent + $0.10 ≤ $0.52: after 9 calls ($0.45) the next could reach $0.55
    expected = math.floor((0.52 - 0.10) / 0.05 + 1e-9) + 1
    assert len(ok) == expected == 9
    assert sum(r.cost_usd for r in ok) == pytest.approx(0.45)
    refused = [r for r in results if not r.ok]
    assert {r.error for r in refused} == {"spend_cap"} and len(refused) == 11
    assert sum(server.ledger.served().values()) == 9  # refused calls never reached the server


def test_spend_cap_holds_with_concurrent_calls(ray_local) -> None:
    results, _ = _spend_run(concurrency=4)
    spent = sum(r.cost_usd or 0.0 for r in results)
    assert spent <= 0.52 and {r.error for r in results} <= {None, "spend_cap"} and len(results) == 20
    assert sum(r.ok for r in results) >= 5  # worst cases in flight wait for usage, then go
