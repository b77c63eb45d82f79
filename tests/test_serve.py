"""`routerbench serve`: router settings behind an OpenAI-compatible endpoint on Ray Serve.

Fast tests check the parts on their own (setting names, the wire format, routing a fitted router,
the traffic writer against a store that fails and recovers, the metrics). The slow ones start the
real app on a local Ray, upstreams are our fault-injecting servers on 127.0.0.1, and a planted-topic
store makes the right route known: model-a is perfect on cooking prompts, model-b on astronomy,
model-c on music (and its server answers every call with a 500). Requests go through the official
``openai`` client, plain and streaming, and the traffic rows are read back from the store,
across a restart of the app.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import UserError
from harness.generation.testing import FaultPlan, FaultServer
from harness.generation.testing.configs import write_fault_config
from harness.serving.fitted import FittedRoute, fit_route
from harness.serving.metrics import ServeStats, StatsHub, prometheus_text
from harness.serving.setting import parse_setting, parse_settings
from harness.serving.traffic import TrafficRow, TrafficWriter
from harness.serving.wire import BadBody, parse_body, stream_events
from harness.store import Store
from tests.conftest import free_port
from tests.matrices import toy_matrix

TOPICS = {
    "cook": ["How long should I boil {} pasta?", "What spices go well with roasted {}?", "Give me a recipe for {} soup.", "How do I bake bread with {} flour?"],
    "stars": ["How far away is the {} galaxy?", "Why does the planet {} have rings?", "What is the orbit of the comet {}?", "How bright is the star {} in the night sky?"],
    "music": ["Which chords does the {} song use on guitar?", "How do I tune a {} violin?", "Who composed the {} symphony?", "What tempo is a {} waltz played at?"],
}
WORDS = ["red", "green", "tiny", "big", "old", "new", "wild", "calm", "dark", "bright"]
GOOD = {"model-a": "cook", "model-b": "stars", "model-c": "music"}
SETTING = "knn:k=5@lambda=1000"
FLUSH_S = 4.0  # longer than a test takes to stop the app: the last rows are written by the shutdown


def planted_store(uri: Path) -> Store:
    """Each model scores 1 on its topic, 0 elsewhere; all cost the same."""
    rows = [(f"{t}-{i}-{j}", t, tpl.format(w)) for t, tpls in TOPICS.items() for i, tpl in enumerate(tpls) for j, w in enumerate(WORDS)]
    prompts = pd.DataFrame(rows, columns=["sample_id", "task", "prompt"]).assign(task_family="planted")
    outcomes = pd.concat(
        [pd.DataFrame({"sample_id": prompts.sample_id, "model": m, "score": (prompts.task == t).astype(float), "cost_usd": 0.001, "response": "x"}) for m, t in GOOD.items()]
    )
    store = Store(uri)
    store.append(prompts, outcomes)
    return store


def config_file(tmp: Path, name: str, server: FaultServer) -> Path:
    return write_fault_config(tmp, server.url, name, limits={"timeout_s": 2.0, "max_concurrency": 32}, sampling={"max_tokens": 8})


# ---------------------------------------------------------------------- setting names
def test_setting_names_parse_into_typed_records() -> None:
    s = parse_setting("knn:k=10@cost=0.001")
    assert (s.router, s.params, s.knob, s.value, s.config) == ("knn", {"k": 10, "metric": "cosine"}, "cost", 0.001, "k=10,metric=cosine")
    assert s.target is not None and s.target.value == 0.001
    lam = parse_setting("mlp@lambda=1000")
    assert (lam.knob, lam.value, lam.target) == ("lambda", 1000.0, None)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("knn", "needs '@cost=USD' or '@lambda=X'"),
        ("knn:k=10@price=1", "'@price=1' must be"),
        ("nope:k=1@cost=0.1", "Unknown router 'nope'"),
        ("knn@cost=0.1", "several settings at once"),
        ("random@lambda=1", "has no λ"),
        ("knn:k@lambda=1", "parameter 'k' must be KEY=VALUE"),
        ("knn:k=10@lambda=-1", "must be a number ≥ 0"),
        ("knn:k=10@cost=-1", "cannot be negative"),
    ],
)
def test_bad_setting_names_are_one_line_errors_naming_the_value(name: str, says: str) -> None:
    with pytest.raises(UserError) as err:
        parse_setting(name)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_setting_given_twice_is_refused() -> None:
    with pytest.raises(UserError, match="given twice"):
        parse_settings([SETTING, SETTING])


# ---------------------------------------------------------------------- routing one prompt
def test_fitted_route_follows_the_predictions_at_its_lambda() -> None:
    """Two clusters of features; m0 is right on the first, m1 on the second and dearer."""
    x = np.array([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 6)
    scores = np.array([[1, 0]] * 6 + [[0, 1]] * 6, dtype=float)
    costs = np.tile([0.001, 0.01], (12, 1))
    train = toy_matrix(scores, costs, x)
    generous = fit_route(parse_setting("knn:k=3@lambda=1000"), train)
    stingy = fit_route(parse_setting("knn:k=3@lambda=0.001"), train)
    probes = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert [d.model for d in generous.decide(probes)] == ["m0", "m1"]
    assert [d.model for d in stingy.decide(probes)] == ["m0", "m0"]  # quality is not worth 10× the price
    d = generous.decide(probes)[1]
    assert (d.predicted_quality, d.predicted_cost) == pytest.approx((1.0, 0.01))
    assert d.header() == "setting=knn:k=3@lambda=1000; model=m1; quality=1; cost=0.01"


def test_a_cost_target_picks_the_lambda_that_spends_it() -> None:
    x = np.array([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10)
    scores = np.array([[1, 0]] * 10 + [[0.5, 1]] * 10, dtype=float)
    costs = np.tile([0.001, 0.01], (20, 1))
    train = toy_matrix(scores, costs, x)
    cheap: FittedRoute = fit_route(parse_setting("knn:k=3@cost=0.001"), train)
    rich: FittedRoute = fit_route(parse_setting("knn:k=3@cost=0.01"), train)
    probe = np.array([[0.0, 1.0]])
    assert cheap.decide(probe)[0].model == "m0" and rich.decide(probe)[0].model == "m1"
    assert cheap.lam < rich.lam


# ---------------------------------------------------------------------- wire format
def test_request_bodies_are_checked_field_by_field() -> None:
    body = parse_body(json.dumps({"model": SETTING, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_tokens": 4, "temperature": 0.2}).encode())
    assert (body.routing_text(), body.token_cap, body.stored_prompt()) == ("hi", 4, "hi")
    for raw, says in [
        (b"{not json", "not JSON"),
        (b"[1]", "JSON object"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "field 'model'"),
        (json.dumps({"model": "m", "messages": []}).encode(), "field 'messages'"),
        (json.dumps({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}).encode(), "field 'messages.0.role'"),
    ]:
        with pytest.raises(BadBody, match=says):
            parse_body(raw)


def test_stream_events_are_openai_chunks_then_done() -> None:
    events = stream_events("chatcmpl-1", "model-a", "hello there", 3, 2)
    assert events[-1] == b"data: [DONE]\n\n"
    docs = [json.loads(e.decode().removeprefix("data: ")) for e in events[:-1]]
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in docs) == "hello there"
    assert docs[-1]["choices"][0]["finish_reason"] == "stop" and docs[-1]["usage"]["total_tokens"] == 5


# ---------------------------------------------------------------------- traffic rows
def _row(i: int, model: str = "model-a") -> TrafficRow:
    return TrafficRow(
        TrafficRow.new_id(), f"prompt {i}", model, SETTING, "knn", "k=5,metric=cosine", 1000.0, 0.9, 0.001,
        f"answer {i}", 5, 3, 1e-5, 0.01, "hash", None, pd.Timestamp.now(tz="UTC"),
    )  # fmt: skip


def test_traffic_rows_reach_the_store_in_batches(tmp_path: Path) -> None:
    writer = TrafficWriter(str(tmp_path / "store"), flush_s=0.05)
    for i in range(30):
        writer.add(_row(i, "model-a" if i % 2 else "model-b"))
    stats = writer.close()
    assert (stats.written, stats.pending, stats.failed_appends) == (30, 0, 0)
    store = Store(tmp_path / "store")
    prompts = store.prompts(families=["traffic"])
    outcomes = store.outcomes()
    assert len(prompts) == 30 and set(prompts["task"]) == {"traffic"} and prompts["gold"].isna().all()
    meta = prompts.merge(outcomes, on="sample_id")
    assert [json.loads(m)["route"] for m in meta["meta"]] == [SETTING] * 30
    assert [json.loads(m)["model"] for m in meta["meta"]] == meta["model"].tolist()  # the model the user got, kept once others answer too
    assert len(outcomes) == 30 and outcomes["score"].isna().all() and set(outcomes["model"]) == {"model-a", "model-b"}
    assert len(store.history()) <= 6  # batched: a handful of commits, not one per row


def test_a_store_outage_is_retried_counted_and_never_blocks(tmp_path: Path) -> None:
    blocker = tmp_path / "down"
    blocker.write_text("a file where the store's directory should be")
    writer = TrafficWriter(str(blocker / "store"), flush_s=0.02, max_backoff_s=0.1)
    t = time.perf_counter()
    for i in range(5):
        writer.add(_row(i))
    assert time.perf_counter() - t < 0.05  # adding never waits for the store
    deadline = time.monotonic() + 20
    while writer.stats().failed_appends < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = writer.stats()
    assert stats.failed_appends >= 2 and stats.pending == 5 and stats.written == 0 and stats.last_error
    blocker.unlink()  # the store comes back
    stats = writer.close(timeout_s=20)
    assert (stats.written, stats.pending) == (5, 0)
    assert len(Store(blocker / "store").outcomes()) == 5


def test_traffic_appends_read_no_keys_and_a_retry_after_half_an_append_writes_each_row_once(tmp_path: Path) -> None:
    """Traffic ids are new, so a batch is a blind append (no MERGE reading the stored keys); an
    append that failed between its prompts and its outcomes commit is retried as a checked one."""
    root = tmp_path / "store"
    # batches go out only when flushed (flush_s is long): rows 4-8 below are one batch however
    # slowly they are queued (CI once split them, and the retry of 4-5 rightly merged 6-8 in)
    writer = TrafficWriter(str(root), flush_s=60, max_backoff_s=0.05)
    for i in range(3):
        writer.add(_row(i))
    assert writer.flush(20).written == 3
    writer.add(_row(3))
    assert writer.flush(20).written == 4
    (root / "outcomes").rename(tmp_path / "outcomes-away")
    (root / "outcomes").write_text("the outcomes table is out of reach")  # the prompts commit succeeds, the outcomes one fails
    for i in range(4, 9):
        writer.add(_row(i))
    deadline = time.monotonic() + 20
    while writer.stats().failed_appends < 2 and time.monotonic() < deadline:
        writer.flush(0.05)
    assert writer.stats().failed_appends >= 2 and len(Store(root).prompts(families=["traffic"])) == 9  # half of the append is in
    (root / "outcomes").unlink()
    (tmp_path / "outcomes-away").rename(root / "outcomes")
    stats = writer.close(timeout_s=20)
    assert (stats.written, stats.pending) == (9, 0)
    store = Store(root)
    prompts, outcomes = store.prompts(families=["traffic"]), store.outcomes()
    assert len(prompts) == 9 and prompts["sample_id"].is_unique  # the retry did not append the prompts again
    assert len(outcomes) == 9 and set(outcomes["sample_id"]) == set(prompts["sample_id"])
    ops = store.history().groupby("table")["operation"].apply(list)
    assert ops["prompts"] == ["WRITE", "WRITE", "WRITE"]  # created, then blind appends (the retry added nothing: no commit)
    assert ops["outcomes"] == ["WRITE", "WRITE", "MERGE"]  # the retried batch's outcomes: a checked append


def test_metrics_add_up_every_replicas_reports_for_prometheus_and_the_status_table() -> None:
    from harness.serving.server import status_table

    writer = {"written": 10, "pending": 1, "dropped": 0, "failed_appends": 0, "last_error": None}
    r1, r2, hub = ServeStats("r1"), ServeStats("r2"), StatsHub()
    for i in range(10):
        r1.served("model-a", 0.001 * (i + 1), 0.02, 1e-5, 0.03)
    r1.failed("unknown_model")
    first = r1.report(writer)
    hub.absorb(first)
    hub.absorb(first)  # a report delivered twice counts once
    r1.served("model-b", 0.011, 0.02, 3e-5, 0.03)
    hub.absorb(r1.report(writer))
    hub.absorb(first)  # ... and a late older one does not take them back
    for i in range(5):
        r2.served("model-b", 0.1, None, None, 0.2)
    hub.absorb(r2.report({**writer, "failed_appends": 2, "last_error": "OSError: store down"}))
    assert r1.report().timings == {"overhead_s": [], "upstream_s": [], "handler_s": []}  # timings go once

    snap = hub.snapshot()
    assert snap["replicas"] == 2
    assert snap["requests"] == {"model-a": 10, "model-b": 6} and snap["errors"] == {"unknown_model": 1}
    assert snap["cost_usd"] == pytest.approx({"model-a": 1e-4, "model-b": 3e-5}) and snap["cost_per_request_usd"] == pytest.approx(1.3e-4 / 16)
    overhead = [0.001 * (i + 1) for i in range(10)] + [0.011] + [0.1] * 5
    assert snap["overhead_s"]["p50"] == pytest.approx(np.quantile(overhead, 0.5)) and snap["overhead_s"]["p99"] == pytest.approx(np.quantile(overhead, 0.99))
    assert snap["traffic"] == {"written": 20, "pending": 2, "dropped": 0, "failed_appends": 2, "last_error": "OSError: store down"}

    text = prometheus_text(snap)
    assert "routerbench_replicas 2" in text
    assert 'routerbench_requests_total{model="model-a"} 10' in text and 'routerbench_requests_total{model="model-b"} 6' in text
    assert 'routerbench_errors_total{kind="unknown_model"} 1' in text
    assert 'routerbench_routing_overhead_seconds{quantile="0.99"}' in text and 'routerbench_traffic_rows{state="pending"} 2' in text
    table = status_table(snap)
    assert table.title == "routerbench serve (2 replicas)" and table.row_count >= 5


def test_cli_serve_reports_bad_settings_in_one_line() -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app, ["serve", "--routers", "knn@cost=0.1", "--models", "x.yaml"])
    assert isinstance(result.exception, UserError) and "several settings at once" in str(result.exception)


def test_a_local_ray_puts_haproxy_in_front_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.ray_runtime import HAPROXY_FLAG, HAPROXY_PORTS, haproxy_binary, serve_ingress_env

    if haproxy_binary() is None:
        pytest.skip("no HAProxy here (ray[serve] brings one on Linux)")
    for name in (HAPROXY_FLAG, *HAPROXY_PORTS):
        monkeypatch.delenv(name, raising=False)
    with serve_ingress_env() as setting:
        assert os.environ[HAPROXY_FLAG] == "1" and setting[HAPROXY_FLAG] == "1"
        ports = [int(os.environ[name]) for name in HAPROXY_PORTS]
        assert len(set(ports)) == 2 and 9101 not in ports  # free ports, not HAProxy's fixed defaults
    assert not {HAPROXY_FLAG, *HAPROXY_PORTS} & set(os.environ)  # set only while Ray starts
    monkeypatch.setenv(HAPROXY_FLAG, "0")  # the user keeps Serve's Python proxy
    with serve_ingress_env() as setting:
        assert setting == {} and os.environ[HAPROXY_FLAG] == "0"


# ---------------------------------------------------------------------- the app on Ray Serve
@pytest.fixture(scope="module")
def served(ray_local, tmp_path_factory: pytest.TempPathFactory):
    """The app with SETTING and a cost-calibrated one over three upstreams, on a free port."""
    pytest.importorskip("ray.serve")
    from ray import serve

    from harness.serving.server import build_plan, start, stop

    tmp = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROUTERBENCH_CACHE", str(tmp / "cache"))
        store = planted_store(tmp / "store")
        servers = {"model-a": FaultServer().start(), "model-b": FaultServer().start(), "model-c": FaultServer(FaultPlan(error_rate=1.0)).start()}
        paths = [config_file(tmp, name, s) for name, s in servers.items()]
        plan = build_plan(str(tmp / "store"), [SETTING, "knn:k=5@cost=0.001"], paths, flush_s=FLUSH_S)
        port = free_port()
        url = start(plan, port=port, replicas=2)
        try:
            yield {"url": url, "store": store, "servers": servers, "plan": plan, "port": port}
        finally:
            stop()
            serve.shutdown()
            for s in servers.values():
                s.stop()


def _client(url: str):
    import openai

    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _traffic(store: Store, texts: set[str], timeout_s: float = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's traffic prompts and their outcomes, once the prompts ``texts`` are among them."""
    deadline = time.monotonic() + timeout_s
    while True:
        prompts = store.prompts(families=["traffic"])
        outcomes = store.outcomes()
        outcomes = outcomes[outcomes["sample_id"].isin(prompts["sample_id"])]
        if (texts <= set(prompts["prompt"]) and len(outcomes) == len(prompts)) or time.monotonic() > deadline:  # outcomes commit after prompts
            return prompts, outcomes
        time.sleep(0.2)


@pytest.mark.slow
def test_models_lists_the_deployed_settings(served) -> None:
    assert sorted(m.id for m in _client(served["url"]).models.list()) == sorted([SETTING, "knn:k=5@cost=0.001"])


@pytest.mark.slow
def test_haproxy_answers_on_the_port_and_every_replica_listens_on_loopback(served) -> None:
    import psutil

    from harness.ray_runtime import haproxy_binary

    if haproxy_binary() is None:
        pytest.skip("no HAProxy here: Serve's Python proxy answers")
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid]
    on_port = {psutil.Process(c.pid).name() for c in listening if c.laddr.port == served["port"]}
    assert on_port == {"haproxy"}
    from ray.serve._private.constants import RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT as HI, RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT as LO

    replicas = [c.laddr.ip for c in listening if LO <= c.laddr.port < HI and "ServeReplica" in " ".join(psutil.Process(c.pid).cmdline())]
    assert replicas == ["127.0.0.1"] * 2  # the two replicas' own HTTP servers (direct ingress): loopback, as --host says


@pytest.mark.slow
def test_requests_go_to_the_model_the_router_knows_is_right(served) -> None:
    client = _client(served["url"])
    before = {m: sum(s.ledger.served().values()) for m, s in served["servers"].items()}
    asks = {"How long should I roast a chicken with garlic and herbs?": "model-a", "How many moons does the planet Jupiter have?": "model-b"}
    for text, model in asks.items():
        raw = client.chat.completions.with_raw_response.create(model=SETTING, messages=_ask(text))
        answer = raw.parse()
        assert answer.model == model
        assert raw.headers["x-routerbench-route"].startswith(f"setting={SETTING}; model={model}; quality=1")
        assert answer.choices[0].message.content.split()[0] == text.split()[0]  # the upstream's echo
        assert answer.usage.completion_tokens == 8
    after = {m: sum(s.ledger.served().values()) for m, s in served["servers"].items()}
    assert {m: after[m] - before[m] for m in after} == {"model-a": 1, "model-b": 1, "model-c": 0}


@pytest.mark.slow
def test_streaming_relays_the_chosen_models_answer(served) -> None:
    client = _client(served["url"])
    raw = client.chat.completions.with_raw_response.create(model=SETTING, messages=_ask("Give me a recipe for pumpkin soup."), stream=True)
    assert "model=model-a" in raw.headers["x-routerbench-route"]
    chunks = list(raw.parse())
    assert {c.model for c in chunks} == {"model-a"}
    text = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(text).startswith("Give me a recipe")
    assert len(text) == 8  # the upstream's own chunks (a word each), relayed as they came, not one relay of the whole answer
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish[-1].choices[0].finish_reason == "stop" and finish[-1].usage.completion_tokens == 8
    prompts, outcomes = _traffic(served["store"], {"Give me a recipe for pumpkin soup."})
    row = outcomes[outcomes["sample_id"].isin(prompts.loc[prompts["prompt"] == "Give me a recipe for pumpkin soup.", "sample_id"])]
    assert row["response"].iloc[0] == "".join(text) and row["output_tokens"].iloc[0] == 8


@pytest.mark.slow
def test_errors_are_openai_errors(served) -> None:
    import httpx
    import openai

    client = _client(served["url"])
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="knn:k=7@cost=1", messages=_ask("hi"))
    assert missing.value.status_code == 404 and SETTING in missing.value.message and "knn:k=5@cost=0.001" in missing.value.message
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model=SETTING, messages=[])
    assert "messages" in empty.value.message
    reply = httpx.post(f"{served['url']}/v1/chat/completions", content=b"{broken", headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "not JSON" in reply.json()["error"]["message"]
    with pytest.raises(openai.InternalServerError) as upstream:
        client.chat.completions.create(model=SETTING, messages=_ask("Which chords does the Wonderwall song use on guitar?"))
    assert upstream.value.status_code == 502 and "model 'model-c'" in upstream.value.message and "server_error" in upstream.value.message
    assert len(served["servers"]["model-c"].ledger.attempts) >= 3  # retried before giving up


def _status_when(url: str, done, timeout_s: float = 30.0) -> dict:
    """The app's status once ``done(status)`` holds (replicas report every REPORT_S), or the last one read."""
    from harness.serving.server import read_status

    deadline = time.monotonic() + timeout_s
    while not done(status := read_status(url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


@pytest.mark.slow
def test_status_and_metrics_add_up_both_replicas(served) -> None:
    """Every request counted once, whichever replica answered it and whichever answers the status:
    the counts per model equal what the upstream servers saw."""
    client = _client(served["url"])
    upstream = lambda: {m: sum(s.ledger.served().values()) for m, s in served["servers"].items() if m != "model-c"}  # noqa: E731
    assert _status_when(served["url"], lambda s: s["replicas"] == 2)["replicas"] == 2  # both report, requests or not
    before = upstream()
    for text in [tpl.format(w) for tpl in TOPICS["cook"][:2] + TOPICS["stars"][:2] for w in ("plum", "teal", "gold")]:
        client.chat.completions.create(model=SETTING, messages=_ask(text))
    want = upstream()  # every answer of these upstreams, in this module's tests too, is one request served
    assert {m: want[m] - before[m] for m in want} == {"model-a": 6, "model-b": 6}
    status = _status_when(served["url"], lambda s: {m: s["requests"].get(m, 0) for m in want} == want)
    assert {m: status["requests"].get(m, 0) for m in want} == want
    with urllib.request.urlopen(f"{served['url']}/metrics", timeout=30) as reply:
        metrics = reply.read().decode()
    assert "routerbench_replicas 2" in metrics and f'routerbench_requests_total{{model="model-a"}} {want["model-a"]}' in metrics


@pytest.mark.slow
def test_traffic_rows_land_in_the_store_and_survive_a_restart(served) -> None:
    from harness.serving.server import read_status, start, stop

    client = _client(served["url"])
    text = "What is the orbit of the comet Halley around the sun?"
    answer = client.chat.completions.create(model="knn:k=5@cost=0.001", messages=_ask(text))
    prompts, outcomes = _traffic(served["store"], {text})
    mine = prompts[prompts["prompt"] == text]
    assert len(mine) == 1 and json.loads(mine["meta"].iloc[0])["route"] == "knn:k=5@cost=0.001"
    row = outcomes[outcomes["sample_id"] == mine["sample_id"].iloc[0]].iloc[0]
    assert (row["model"], row["response"]) == (answer.model, answer.choices[0].message.content)
    assert np.isnan(row["score"]) and row["cost_usd"] > 0 and row["latency_s"] > 0 and row["input_tokens"] > 0
    failed = outcomes[outcomes["error"].notna()]
    assert set(failed["error"]) <= {"engine:server_error"}

    status = read_status(served["url"])
    assert status["traffic"]["failed_appends"] == 0 and sum(status["requests"].values()) >= 1
    with urllib.request.urlopen(f"{served['url']}/metrics", timeout=30) as reply:
        metrics = reply.read().decode()
    assert 'model="model-b"' in metrics and "routerbench_routing_overhead_seconds" in metrics and 'kind="upstream:server_error"' in metrics
    from typer.testing import CliRunner

    from harness.cli import app

    printed = CliRunner().invoke(app, ["serve", "--status", "--port", str(served["port"])])
    assert printed.exit_code == 0 and "routing overhead ms" in printed.output and "requests model-b" in printed.output

    # A request answered right before the app stops is written on the way down, and what was written stays.
    last = "How bright is the star Sirius in the night sky?"
    client.chat.completions.create(model=SETTING, messages=_ask(last))
    assert _status_when(served["url"], lambda s: s["traffic"]["pending"] == 1, timeout_s=3)["traffic"]["pending"] == 1  # queued, not written yet (FLUSH_S)
    stop()
    assert last in set(served["store"].prompts(families=["traffic"])["prompt"])  # written by the shutdown
    start(served["plan"], port=served["port"])
    client.chat.completions.create(model=SETTING, messages=_ask("Why does the planet Saturn have rings?"))
    after = {text, last, "Why does the planet Saturn have rings?"}
    prompts, outcomes = _traffic(served["store"], after)
    assert after <= set(prompts["prompt"]) and len(outcomes) == len(prompts)
