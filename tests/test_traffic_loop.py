"""Served traffic becomes evaluation data. Rows written as `routerbench serve` writes them are graded
later by the LLM judge (`regrade --family traffic --judge …`: idempotent, failures retried, nothing
of a row lost); the other models answer the served prompts (`extend --tasks traffic --judge …`: as
served, a model's own served answers kept); `evaluate --tasks traffic` says what is missing until
every model has graded answers, then judges routers on the traffic (`refresh --tasks traffic` does
it all on a schedule). One local server plays the models and the judge; the slow test runs the
whole loop on 40 requests and checks AIQ against a computation by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.evaluate import EvalSpec, evaluate
from harness.extend import ExtendSpec, plan
from harness.model_config import load_model_config
from harness.serving.traffic import TrafficRow, traffic_frames
from harness.store import Store
from tests.chat_server import ChatServer, user_text
from tests.echo import echo_config
from tests.test_cli_e2e import cli, cli_error  # the CLI in-process: its output, or the UserError it raised

PROMPTS = {  # the two judge prompts the grader requires, as MT-Bench's family keeps them
    "single-v1": {"name": "single-v1", "system_prompt": "You are a judge.", "prompt_template": "[Question]\n{question}\n[Answer]\n{answer}\nRate it [[1-10]]."},
    "single-v1-multi-turn": {"name": "single-v1-multi-turn", "system_prompt": "You are a judge.", "prompt_template": "### User:\n{question_1}\n{answer_1}\n### User:\n{question_2}\n{answer_2}"},
}


def rating(text: str) -> int:
    """The local judge's rating of what it is asked (question and answer): [[9]] for an answer
    containing ``good`` and for model a's answer to a math question or b's to a poem, else [[3]]."""
    right = "good" in text or ("math" in text and "[a]" in text) or ("poem" in text and "[b]" in text)
    return 9 if right else 3


class Local(ChatServer):
    """The local server of every model of a test: model ``judge`` rates (:func:`rating`), any other
    model ``m`` answers ``[m] <the last user message>``; while ``down`` the judge answers 500 (an
    engine failure)."""

    def __init__(self) -> None:
        self.down = False
        super().__init__(self.answer)

    def answer(self, body: dict) -> str | None:
        if body["model"] == "judge":
            return None if self.down else f"Rating: [[{rating(user_text(body))}]]"
        return f"[{body['model']}] {[m for m in body['messages'] if m['role'] == 'user'][-1]['content']}"

    def asked(self, model: str) -> list[list[dict]]:
        """The messages of each request ``model`` was sent (in a fixed order: they come concurrently)."""
        return sorted((b["messages"] for b in self.bodies if b["model"] == model), key=json.dumps)

    def config(self, directory: Path, model: str, **fields: object) -> Path:
        """A model config file for ``model`` on this server (quick to fail, answers of any length)."""
        limits = {"timeout_s": 5.0, "max_retries": 0, "backoff_s": 0.01, "max_concurrency": 4}
        return echo_config(directory, self.url, model, model=model, limits=limits, sampling={"max_tokens": 32}, **fields)


@pytest.fixture
def local():
    server = Local()
    yield server
    server.close()


def row(i: int, model: str, response: str | None, error: str | None = None) -> TrafficRow:
    return TrafficRow(
        sample_id=f"traffic-{i:03d}", prompt=f"question {i}?", model=model, route="knn@cost=0.001", router="knn", config="k=10", lam=0.5,
        predicted_quality=0.7, predicted_cost=0.001, response=response, input_tokens=5, output_tokens=3, cost_usd=1e-5, latency_s=0.1,
        config_hash="cfg-" + model, error=error, created_at=pd.Timestamp("2026-01-01", tz="UTC"),
    )  # fmt: skip


def traffic_store(tmp: Path, rows: list[TrafficRow] | None = None) -> str:
    """A store with another family (graded, must stay untouched), MT-Bench's judge prompts and served
    traffic (``rows``, by default four whose answers are rated by the word ``good``)."""
    uri = str(tmp / "store")
    st = Store(uri)
    other = pd.DataFrame({"sample_id": ["q1"], "task": "qa", "task_family": "qa", "prompt": ["2+2?"], "gold": ["4"], "meta": [None]})
    st.append(
        other,
        pd.DataFrame({"sample_id": ["q1"], "model": "a", "response": ["4"], "score": [1.0], "cost_usd": [1e-5], "grader": ["exact-match@1"], "config_hash": ["h"]}),
        families=pd.DataFrame([{"task_family": "mtbench", "family": None, "grader": "mtbench-judge", "settings": json.dumps({"judge_prompts": PROMPTS})}]),
        source="test",
    )
    if rows is None:
        rows = [row(0, "a", "a good answer"), row(1, "b", "a bad answer"), row(2, "a", "good again"), row(3, "b", None, error="engine:timeout")]
    if rows:
        serve_into(uri, rows)
    return uri


def test_regrade_family_traffic_scores_served_rows_with_the_judge(tmp_path: Path, local: Local, ray_local) -> None:
    uri = traffic_store(tmp_path)
    before_other = Store(uri).outcomes(models=["a"]).set_index("sample_id").loc[["q1"]]
    cfg = local.config(tmp_path, "judge")

    assert cli_error("regrade", "--family", "traffic", "--store", uri).startswith("--family traffic: served traffic, no gold answers")
    assert "--judge model_configs/<judge>.yaml" in cli_error("regrade", "--family", "traffic", "--store", uri)
    assert cli_error("regrade", "--family", "nope", "--judge", cfg, "--store", uri).startswith("--family nope: no prompts of that task family")
    assert cli("regrade", "--store", uri).strip().endswith("nothing: every grade is current")  # without --family: traffic is not graded

    local.down = True  # failed judge calls: recorded as grader errors, no score, and said
    printed = cli("regrade", "--family", "traffic", "--judge", cfg, "--store", uri).strip().splitlines()
    assert printed[-2:] == ["regraded a: 2, b: 1", "  still without a grade (a: 2, b: 1): the grader's errors are recorded per outcome; a rerun retries them"]
    out = Store(uri).outcomes().set_index(["sample_id", "model"]).sort_index()
    served = out.loc[["traffic-000", "traffic-001", "traffic-002"]]
    assert served["score"].isna().all() and served["error"].str.startswith("grader:judge engine").all()

    local.down = False  # a later run retries them
    calls = len(local.bodies)
    assert cli("regrade", "--family", "traffic", "--judge", cfg, "--store", uri).strip().endswith("regraded a: 2, b: 1")
    assert len(local.bodies) - calls == 3
    out = Store(uri).outcomes().set_index(["sample_id", "model"]).sort_index()
    assert out.loc[("traffic-000", "a"), "score"] == pytest.approx(0.9)
    assert out.loc[("traffic-001", "b"), "score"] == pytest.approx(0.3)
    assert out.loc[("traffic-002", "a"), "score"] == pytest.approx(0.9)
    graded = out.loc[["traffic-000", "traffic-001", "traffic-002"]]
    assert graded["grader"].str.startswith("mtbench-judge@1+judge+prompts-").all() and graded["error"].isna().all()
    assert graded["response"].tolist() == ["a good answer", "a bad answer", "good again"] and (graded["cost_usd"] == 1e-5).all()
    # nothing of the served row is lost: its tokens, latency, config hash, cost source and time stay
    assert (graded["input_tokens"] == 5).all() and (graded["latency_s"] == 0.1).all() and graded["config_hash"].tolist() == ["cfg-a", "cfg-b", "cfg-a"]
    assert (graded["cost_source"] == "tokens×price").all() and (graded["created_at"] == pd.Timestamp("2026-01-01", tz="UTC")).all()
    failed = out.loc[("traffic-003", "b")]  # the failed upstream call: not graded, kept as served
    assert np.isnan(failed["score"]) and failed["error"] == "engine:timeout" and pd.isna(failed["grader"])
    pd.testing.assert_frame_equal(Store(uri).outcomes(models=["a"]).set_index("sample_id").loc[["q1"]], before_other)

    calls, versions = len(local.bodies), Store(uri).versions()
    assert cli("regrade", "--family", "traffic", "--judge", cfg, "--store", uri).strip().endswith("regraded nothing: every grade is current")
    assert cli("regrade", "--judge", cfg, "--store", uri).strip().endswith("regraded nothing: every grade is current")  # a plain run keeps the judge's
    assert len(local.bodies) == calls and Store(uri).versions() == versions  # no commit either, not even of the families table
    assert Store(uri).families()["traffic"].grader == "mtbench-judge"
    assert Store(uri).families()["traffic"].settings["judge_prompts"] == PROMPTS  # MT-Bench's, kept for the family
    assert "--judge" in cli_error("regrade", "--family", "traffic", "--store", uri)  # still the judge's family: a run without one says so


def test_regrade_family_traffic_needs_judge_prompts_in_the_store(tmp_path: Path, local: Local) -> None:
    uri = str(tmp_path / "store")
    prompts, outcomes = traffic_frames([row(0, "a", "a good answer")], "traffic")
    Store(uri).append(prompts, outcomes, source="serve traffic (traffic)")
    cfg = local.config(tmp_path, "judge")
    message = cli_error("regrade", "--family", "traffic", "--judge", cfg, "--store", uri)
    assert message == "--family traffic: the judge needs MT-Bench's judge prompts in the store: `routerbench prompts import mtbench DIR` (DIR with judge_prompts.jsonl) first"
    assert "traffic" not in Store(uri).families() and not local.bodies


def test_the_judge_reads_a_served_conversation_as_one_question() -> None:
    from harness.grading import grade_frame
    from harness.grading.judge import JudgeGrader, judge_prompts_from

    seen: list[list[dict]] = []

    def complete(messages: list[dict]) -> str:
        seen.append(messages)
        return "Rating: [[7]]"

    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "And 2+2?"}]
    grader = JudgeGrader(complete, judge_prompts_from({"judge_prompts": PROMPTS}), "j", concurrency=1)
    frame = pd.DataFrame({"response": ["4", "Paris"], "gold": [None, None], "meta": [None, None], "prompt": [json.dumps(conversation), "Capital of France?"]})
    graded = grade_frame(grader, frame)
    assert graded["score"].tolist() == [0.7, 0.7] and graded["error"].isna().all()
    assert len(seen) == 2  # one judge call each: the answer is to the conversation's last turn
    assert seen[0][1]["content"] == "[Question]\n[system]\nBe brief.\n\n[user]\nHi\n\n[assistant]\nHello\n\n[user]\nAnd 2+2?\n[Answer]\n4\nRate it [[1-10]]."
    assert seen[1][1]["content"] == "[Question]\nCapital of France?\n[Answer]\nParis\nRate it [[1-10]]."


def served(i: int, model: str, prompt: str, configs: dict[str, Path], error: str | None = None) -> TrafficRow:
    """Request ``i`` as `routerbench serve` records it when its router chose ``model``: the model's
    answer (as the local server gives it), its usage priced by the config, the config's hash."""
    config = load_model_config(configs[model])
    question = prompt if not prompt.startswith("[") else json.loads(prompt)[-1]["content"]
    return TrafficRow(
        sample_id=f"traffic-{i:03d}", prompt=prompt, model=model, route="knn@cost=0.0001", router="knn", config="k=5", lam=100.0,
        predicted_quality=0.9, predicted_cost=1e-4, response=None if error else f"[{model}] {question}", input_tokens=None if error else 10,
        output_tokens=None if error else 5, cost_usd=None if error else float(config.price.cost(np.array([10.0]), np.array([5.0]))[0]),
        latency_s=0.2, config_hash=config.config_hash(), error=error, created_at=pd.Timestamp("2026-01-02", tz="UTC"),
    )  # fmt: skip


def serve_into(uri: str, rows: list[TrafficRow]) -> None:
    """The rows appended exactly as TrafficWriter appends a batch."""
    prompts, outcomes = traffic_frames(rows, "traffic")
    Store(uri).append(prompts, outcomes, source="serve traffic (traffic)")


CONVERSATION = json.dumps([{"role": "system", "content": "Answer in verse."}, {"role": "user", "content": "a poem about rain"}])


def served_store(tmp: Path, configs: dict[str, Path]) -> str:
    """Another family (q1, gold '4', a's outcome), MT-Bench's judge prompts, and four served requests:
    a math question to a, a poem to b, a conversation asking for a poem to a, a math question whose
    call to b failed."""
    uri = traffic_store(tmp, rows=[])
    rows = [served(0, "a", "math: 2+2?", configs), served(1, "b", "a poem about snow", configs), served(2, "a", CONVERSATION, configs)]
    serve_into(uri, [*rows, served(3, "b", "math: 3*3?", configs, error="engine:timeout")])
    return uri


def scores(uri: str, model: str) -> dict[str, float]:
    out = Store(uri).outcomes(models=[model])
    out = out[out["sample_id"].str.startswith("traffic-") & out["score"].notna()]
    return dict(zip(out["sample_id"].str[-1].astype(int).map(lambda i: f"t{i}"), out["score"].round(6)))


def test_extend_answers_served_traffic_with_the_other_models_and_the_judge(tmp_path: Path, local: Local, ray_local) -> None:
    configs = {m: local.config(tmp_path, m) for m in ("a", "b")}
    judge = local.config(tmp_path, "judge")
    uri = served_store(tmp_path, configs)
    served_b = Store(uri).outcomes(models=["b"]).set_index("sample_id").loc["traffic-001"]

    message = cli_error("extend", "--model", configs["b"], "--tasks", "traffic", "--store", uri)
    assert message == "--tasks traffic: served traffic, no gold answers to grade against; grade it with an LLM judge: --judge model_configs/<judge>.yaml"
    assert not local.bodies and "traffic" not in Store(uri).families()

    work, done = plan(Store(uri), load_model_config(configs["b"]), ExtendSpec())  # by default every family but served traffic
    assert (work["sample_id"].tolist(), done) == (["q1"], 0)

    # b answers the prompts a was served (the conversation as its messages) and the one its own call failed on, not its own served answer
    out = cli("extend", "--model", configs["b"], "--tasks", "traffic", "--judge", judge, "--store", uri)
    assert "b: 3 prompts to do (1 already done), 3 outcomes appended, 3 graded" in out
    assert local.asked("b") == sorted([[{"role": "user", "content": "math: 2+2?"}], json.loads(CONVERSATION), [{"role": "user", "content": "math: 3*3?"}]], key=json.dumps)
    assert scores(uri, "b") == {"t0": 0.3, "t2": 0.9, "t3": 0.3}  # b is the judge's choice for poems only
    b = Store(uri).outcomes(models=["b"]).set_index("sample_id")
    pd.testing.assert_series_equal(b.loc["traffic-001"], served_b)  # its served answer is kept as served (not graded: regrade's job)
    assert (b.loc[["traffic-000", "traffic-002", "traffic-003"], "config_hash"] == load_model_config(configs["b"]).config_hash()).all()
    assert b.loc[["traffic-000", "traffic-002", "traffic-003"], "grader"].str.startswith("mtbench-judge@1+judge+prompts-").all()
    assert Store(uri).families()["traffic"].grader == "mtbench-judge"

    assert "a: 2 prompts to do (2 already done), 2 outcomes appended, 2 graded" in cli("extend", "--model", configs["a"], "--tasks", "traffic", "--judge", judge, "--store", uri)
    assert local.asked("a") == [[{"role": "user", "content": "a poem about snow"}], [{"role": "user", "content": "math: 3*3?"}]]
    assert scores(uri, "a") == {"t1": 0.3, "t3": 0.9}
    calls = len(local.bodies)
    for model in ("a", "b"):  # done: a rerun asks nothing
        assert f"{model}: 0 prompts to do (4 already done)" in cli("extend", "--model", configs[model], "--tasks", "traffic", "--judge", judge, "--store", uri)
    assert len(local.bodies) == calls

    # the served answers are not graded yet: evaluate runs on the prompts both models have graded, and says what grades the rest
    evaluate_args = ("evaluate", "--tasks", "traffic", "--routers", "oracle", "--split", "kfold:2", "--bootstrap", "0", "--sequential")
    printed = cli(*evaluate_args, "--out", tmp_path / "partial", "--store", uri)
    assert "3 test prompts left out" in printed and "a has outcomes for 2 of 4 prompts" in printed
    assert "to evaluate on every prompt, grade the answers with `routerbench regrade --family traffic --judge model_configs/<judge>.yaml`" in printed

    # the served answers, graded by regrade: every traffic prompt has a graded outcome of a and b
    assert cli("regrade", "--family", "traffic", "--judge", judge, "--store", uri).strip().endswith("regraded a: 2, b: 1")
    assert scores(uri, "a") == {"t0": 0.9, "t1": 0.3, "t2": 0.3, "t3": 0.9} and scores(uri, "b") == {"t0": 0.3, "t1": 0.9, "t2": 0.9, "t3": 0.3}

    # evaluate judges routers on it as on any family: a is cheap, b dear, each right on one topic
    cost = {m: float(load_model_config(configs[m]).price.cost(np.array([10.0]), np.array([5.0]))[0]) for m in ("a", "b")}
    res = tmp_path / "results"
    assert "to evaluate on every prompt" not in cli(*evaluate_args, "--out", res, "--store", uri)
    points = pd.read_parquet(res / "points.parquet").set_index(["router", "config"])
    assert points.loc[("llm", "a"), ["cost", "quality"]].tolist() == pytest.approx([cost["a"], 0.6])
    assert points.loc[("llm", "b"), ["cost", "quality"]].tolist() == pytest.approx([cost["b"], 0.6])
    assert points.loc[("oracle", ""), ["cost", "quality"]].tolist() == pytest.approx([(cost["a"] + cost["b"]) / 2, 0.9])  # a on math, b on poems
    aiq = pd.read_csv(res / "aiq.csv").set_index("router")
    assert aiq.loc["zero", "aiq"] == pytest.approx(0.6)  # the hull of two points of equal quality is flat


def test_evaluate_says_what_served_traffic_lacks_and_what_fills_it_in(tmp_path: Path, local: Local, ray_local) -> None:
    configs = {m: local.config(tmp_path, m) for m in ("a", "b")}
    judge = local.config(tmp_path, "judge")
    uri = served_store(tmp_path, configs)
    args = ("evaluate", "--tasks", "traffic", "--routers", "oracle", "--bootstrap", "0", "--sequential", "--out", tmp_path / "results", "--store", uri)
    judged = " --judge model_configs/<judge>.yaml"
    extend = f"answer them with `routerbench extend --model <config>.yaml --tasks traffic{judged}`"
    assert cli_error(*args) == (  # served, nothing graded yet
        "task family 'traffic' has no test prompt with a graded outcome of every model (a, b): "
        "a: 0 of 4 graded, 2 answered but not graded, 2 not answered; b: 0 of 4 graded, 1 answered but not graded, 3 not answered; "
        f"{extend} for a, b; grade the answers with `routerbench regrade --family traffic{judged}`"
    )
    cli("regrade", "--family", "traffic", "--judge", judge, "--store", uri)
    assert cli_error(*args) == f"task family 'traffic' has no test prompt with a graded outcome of every model (a, b): a: 2 of 4 graded, 2 not answered; b: 1 of 4 graded, 3 not answered; {extend} for a, b"
    assert cli_error(*args[:-2], "--models", "b", "--store", uri).startswith("task family 'traffic' has no test prompt with a graded outcome of every model (b): b: 1 of 4 graded, 3 not answered;")

    # every family: traffic is skipped with the same line, the others are evaluated
    result = evaluate(Store(uri), EvalSpec(routers=("oracle",), bootstrap=0), parallel=False)
    assert result.summary["task_family"].tolist() == ["qa"] and result.skipped == ["traffic"]
    assert result.why_skipped["traffic"].endswith(f"b: 1 of 4 graded, 3 not answered; {extend} for a, b")



def test_refresh_tasks_traffic_answers_and_grades_the_whole_family(tmp_path: Path, local: Local, ray_local) -> None:
    (tmp_path / "models").mkdir()
    configs = {m: local.config(tmp_path / "models", m) for m in ("a", "b")}
    judge = local.config(tmp_path, "judge")
    uri = served_store(tmp_path, configs)
    out = cli("refresh", "--models", tmp_path / "models", "--tasks", "traffic", "--judge", judge, "--no-evaluate", "--store", uri)
    assert "a: 2 outcomes appended (2 already current)" in out and "b: 3 outcomes appended (1 already current)" in out
    assert "regraded a: 2, b: 1; repriced nothing" in out  # the served answers, by the judge
    assert scores(uri, "a") == {"t0": 0.9, "t1": 0.3, "t2": 0.3, "t3": 0.9} and scores(uri, "b") == {"t0": 0.3, "t1": 0.9, "t2": 0.9, "t3": 0.3}
    calls = len(local.bodies)
    assert "regraded nothing; repriced nothing" in cli("refresh", "--models", tmp_path / "models", "--tasks", "traffic", "--judge", judge, "--no-evaluate", "--store", uri)
    assert len(local.bodies) == calls


MATH = [f"math: what is {x} times {x + 3}?" for x in range(4, 9)] + [f"math: solve {x}y + {x + 1} = 0 for y" for x in range(2, 7)]
MATH += [f"math: is {p} a prime number?" for p in (91, 97, 101, 111, 113)] + [f"math: the square root of {x * x}" for x in range(11, 16)]
POEM = [f"write a poem about the {t}" for t in ("rain", "snow", "moon", "river", "forest")] + [f"a short poem on {t} in spring" for t in ("birds", "tulips", "rivers", "mornings", "bees")]
POEM += [f"compose a poem about {t} at night" for t in ("stars", "owls", "lanterns", "cities", "wolves")] + [f"poem request: {t} and the sea" for t in ("ships", "gulls", "salt", "storms", "shells")]


@pytest.mark.slow
def test_served_traffic_judges_routers_end_to_end(tmp_path: Path, local: Local, ray_local) -> None:
    """Serve's rows → extend each model over the prompts the other was served (judged) → regrade the
    served answers → evaluate on traffic: a is cheap and right on math, b dear and right on poems,
    so a kNN router (topics apart in embedding space) reaches the oracle's quality and beats the zero router."""
    configs = {"a": local.config(tmp_path, "a"), "b": local.config(tmp_path, "b", price={"input_per_mtok": 10.0, "output_per_mtok": 20.0})}
    judge = local.config(tmp_path, "judge")
    uri = traffic_store(tmp_path, rows=[])
    prompts = [p for pair in zip(MATH, POEM) for p in pair]  # 40 requests, math and poems in turn
    serve_into(uri, [served(i, "ab"[(i // 2) % 2], p, configs) for i, p in enumerate(prompts)])  # the router's choice: right on half of each topic

    for model in ("a", "b"):
        out = cli("extend", "--model", configs[model], "--tasks", "traffic", "--judge", judge, "--store", uri)
        assert f"{model}: 20 prompts to do (20 already done), 20 outcomes appended, 20 graded" in out
    assert cli("regrade", "--family", "traffic", "--judge", judge, "--store", uri).strip().endswith("regraded a: 20, b: 20")

    # every traffic prompt has both models' outcomes, as the judge rates them
    out = Store(uri).outcomes(["sample_id", "model", "score", "cost_usd"])
    out = out[out["sample_id"].str.startswith("traffic-")]
    is_math = pd.Series([p.startswith("math") for p in prompts], index=[f"traffic-{i:03d}" for i in range(len(prompts))])
    expected = pd.DataFrame({"a": np.where(is_math, 0.9, 0.3), "b": np.where(is_math, 0.3, 0.9)}, index=is_math.index)
    pd.testing.assert_frame_equal(out.pivot(index="sample_id", columns="model", values="score").rename_axis(index=None, columns=None), expected)
    cost = {m: float(load_model_config(configs[m]).price.cost(np.array([10.0]), np.array([5.0]))[0]) for m in ("a", "b")}
    assert out.groupby("model")["cost_usd"].agg(["min", "max"]).to_numpy().tolist() == [[cost["a"]] * 2, [cost["b"]] * 2]

    res = tmp_path / "results"
    printed = cli("evaluate", "--tasks", "traffic", "--routers", "knn,oracle", "--split", "kfold:5", "--bootstrap", "50", "--out", res, "--store", uri)
    assert "40 test prompts" in printed
    points = pd.read_parquet(res / "points.parquet").set_index(["router", "config"])
    assert points.loc[("llm", "a"), ["cost", "quality"]].tolist() == pytest.approx([cost["a"], 0.6])
    assert points.loc[("llm", "b"), ["cost", "quality"]].tolist() == pytest.approx([cost["b"], 0.6])
    middle = (cost["a"] + cost["b"]) / 2  # the oracle: a on math, b on poems
    assert points.loc[("oracle", ""), ["cost", "quality"]].tolist() == pytest.approx([middle, 0.9])
    aiq = pd.read_csv(res / "aiq.csv", keep_default_na=False).set_index(["router", "config"])
    assert aiq.loc[("zero", ""), "aiq"] == pytest.approx(0.6)
    # kNN (k=5): everything to a at a small λ, each topic to its model at a large one; its hull
    # is the segment between those two points, flat after: AIQ over [c_a, c_b] by hand
    by_hand = ((0.6 + 0.9) / 2 * (middle - cost["a"]) + 0.9 * (cost["b"] - middle)) / (cost["b"] - cost["a"])
    knn = aiq.loc[("knn", "k=5,metric=cosine")]
    assert knn["aiq"] == pytest.approx(by_hand) and knn["d_aiq"] == pytest.approx(by_hand - 0.6)
    assert knn["d_lo"] > 0 and knn["p_better"] == 1.0
