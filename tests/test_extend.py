"""`routerbench extend`: the Ray Data pipeline against our fault-injecting OpenAI-protocol server.

The server echoes the prompt's words (one word here), so a prompt "yes" with gold "yes" is graded 1
by the exact-match grader: scores, failures, resumption and concurrency are all checked end to end
with real Ray, real Parquet, a real HTTP server on 127.0.0.1 and the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.store import Store
from harness.generation.testing.configs import write_fault_config
from harness.generation.testing.fault_server import FaultPlan, FaultServer
from harness.model_config import load_model_config
from harness.extend import ExtendSpec, extend, plan
from harness.tasks.prompt_import import import_prompts
from tests.conftest import SHARED_DATA, require_shared

N = 24
WORDS = ["yes", "no", "maybe"]


def write_prompts(path: Path, n: int = N) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "sample_id": [f"g{i:03d}" for i in range(n)],
            "prompt": [WORDS[i % 3] for i in range(n)],
            "gold": [None if i % 8 == 7 else WORDS[(i // 2) % 3] for i in range(n)],
            "task": "echo",
        }
    )
    rows.to_json(path, orient="records", lines=True)
    return rows


def config_file(tmp: Path, server: FaultServer, name: str = "echo-model", **limits) -> Path:
    return write_fault_config(tmp, server.url, name, limits={"timeout_s": 2.0, "max_concurrency": 4, **limits})


@pytest.fixture()
def server():
    with FaultServer(FaultPlan(completion_tokens=1)) as s:
        yield s


@pytest.fixture()
def echo_store(tmp_path: Path):
    store = Store(tmp_path / "store")
    rows = write_prompts(tmp_path / "echo.jsonl")
    import_prompts(store, "generic", tmp_path / "echo.jsonl")
    return store, rows


def expected_scores(rows: pd.DataFrame) -> pd.Series:
    scored = rows[rows["gold"].notna()]
    return pd.Series((scored["prompt"] == scored["gold"]).astype(float).to_numpy(), index=scored["sample_id"])


def test_extend_generates_grades_and_appends(echo_store, server, tmp_path, ray_local) -> None:
    store, rows = echo_store
    config = load_model_config(config_file(tmp_path, server))
    report = extend(store, config, ExtendSpec(commit_every=5))
    assert (report.planned, report.appended, report.skipped_done) == (N, N, 0)
    out = store.outcomes(models=["echo-model"]).set_index("sample_id").sort_index()
    assert len(out) == N and store.history()["table"].eq("outcomes").sum() >= N // 5  # one version per commit_every rows
    graded = out[out["error"].isna()]
    pd.testing.assert_series_equal(graded["score"], expected_scores(rows).sort_index(), check_names=False)
    assert graded["grader"].unique().tolist() == ["exact-match@1"]
    # no gold: recorded as such, never scored 0
    no_gold = out.loc[rows.loc[rows["gold"].isna(), "sample_id"]]
    assert (no_gold["error"] == "gold:missing").all() and no_gold["score"].isna().all()
    assert report.errors == {"gold:missing": len(no_gold)}
    # usage from the server, cost from the config's prices
    assert (out["input_tokens"] > 0).all() and (out["output_tokens"] == 1).all()
    expected_cost = (out["input_tokens"] * 1.0 + out["output_tokens"] * 2.0) / 1e6
    pd.testing.assert_series_equal(out["cost_usd"], expected_cost.astype(float), check_names=False)
    assert out["config_hash"].nunique() == 1 and (out["latency_s"] > 0).all()

    # a rerun with the same arguments asks the server nothing and appends nothing: a missing gold
    # answer is regrade's to fix, from the stored response
    calls = len(server.ledger.attempts)
    again = extend(store, config, ExtendSpec())
    assert (again.planned, again.appended, again.skipped_done) == (0, 0, N)
    assert len(server.ledger.attempts) == calls


def test_engine_failures_are_recorded_and_a_rerun_retries_them(echo_store, server, tmp_path, ray_local) -> None:
    store, _ = echo_store
    server.script("g003", ["400"])  # not retried
    server.script("g004", ["500"] * 3)  # more than max_retries=2
    server.script("g005", ["500", "ok"])  # a retry succeeds
    config = load_model_config(config_file(tmp_path, server))
    report = extend(store, config, ExtendSpec())
    out = store.outcomes(models=["echo-model"]).set_index("sample_id")
    assert out.loc["g003", "error"] == "engine:bad_request" and pd.isna(out.loc["g003", "score"])
    assert out.loc["g004", "error"] == "engine:server_error" and pd.isna(out.loc["g004", "score"])
    assert pd.isna(out.loc["g005", "error"]) and out.loc["g005", "score"] in (0.0, 1.0)
    assert report.errors["engine:bad_request"] == 1 and report.errors["engine:server_error"] == 1
    assert server.ledger.outcomes("g003") == ["400"] and server.ledger.outcomes("g004") == ["500"] * 3

    again = extend(store, config, ExtendSpec())  # the script is used up: both succeed now
    out = store.outcomes(models=["echo-model"]).set_index("sample_id")
    assert out.index.is_unique and len(out) == N
    assert pd.isna(out.loc["g003", "error"]) and pd.isna(out.loc["g004", "error"])
    assert {"g003", "g004"} <= set(server.ledger.served()) and again.appended >= 2


def losing_pipeline(monkeypatch: pytest.MonkeyPatch, error: Exception, times: int = 1) -> list[list[str]]:
    """Make the pipeline fail with ``error`` after its first batch, the first ``times`` runs (as Ray
    does when a node holding the engine is lost: tests/test_multi_node.py kills a real one); returns
    the sample_ids each run was given."""
    import harness.extend as ext

    real, given = ext._pipeline, []

    def pipeline(work, *args):  # noqa: ANN001, ANN002
        given.append(sorted(work["sample_id"]))
        batches = real(work, *args)
        if len(given) <= times:
            yield next(batches)
            batches.close()
            raise error
        yield from batches

    monkeypatch.setattr(ext, "_pipeline", pipeline)
    return given


def test_a_lost_engine_keeps_what_came_back_and_answers_the_rest_again(echo_store, server, tmp_path, ray_local, monkeypatch) -> None:
    from ray.exceptions import ActorDiedError

    store, rows = echo_store
    given = losing_pipeline(monkeypatch, ActorDiedError())
    report = extend(store, load_model_config(config_file(tmp_path, server)), ExtendSpec(commit_every=5, batch_size=8))
    assert len(given) == 2 and len(report.lost) == 1 and report.lost[0].startswith("ActorDiedError")
    first = set(given[0]) - set(given[1])
    assert len(first) == 8 and set(given[1]) < set(given[0])  # the batch that came back is not asked again
    assert (report.planned, report.appended) == (N, N)
    out = store.outcomes(models=["echo-model"])
    assert len(out) == N and out["sample_id"].is_unique
    assert store.history().query("table == 'outcomes'")["rows_added"].sum() == N
    served = server.ledger.served()
    assert all(served[s] == 1 for s in first) and set(served) == set(rows["sample_id"])


def test_an_error_of_the_work_is_not_resumed_and_a_last_loss_keeps_what_came_back(echo_store, server, tmp_path, ray_local, monkeypatch) -> None:
    from ray.exceptions import ActorDiedError

    from harness.errors import RunStopped

    store, _ = echo_store
    config = load_model_config(config_file(tmp_path, server))
    given = losing_pipeline(monkeypatch, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        extend(store, config, ExtendSpec(batch_size=8))
    assert len(given) == 1
    given = losing_pipeline(monkeypatch, ActorDiedError(), times=5)
    with pytest.raises(RunStopped, match=r"lost a node or worker 2 time\(s\), the last ActorDiedError.*16 outcomes are stored, 8 prompts not done: rerun to resume") as stopped:
        extend(store, config, ExtendSpec(batch_size=8, lost_node_retries=1))
    assert len(given) == 2 and isinstance(stopped.value.__cause__, ActorDiedError) and "\n" not in str(stopped.value)
    assert len(store.outcomes(models=["echo-model"])) == 16  # the two batches that came back, committed before the error


def test_limit_takes_the_first_prompts_of_each_family_in_sample_id_order(echo_store, server, tmp_path, ray_local) -> None:
    store, _ = echo_store
    config = load_model_config(config_file(tmp_path, server))
    first = extend(store, config, ExtendSpec(limit=5))
    assert first.appended == 5
    assert sorted(store.outcomes(["sample_id"], models=["echo-model"])["sample_id"]) == [f"g{i:03d}" for i in range(5)]
    assert extend(store, config, ExtendSpec(limit=5)).appended == 0


def test_unknown_family_and_empty_store_are_one_line_errors(echo_store, server, tmp_path) -> None:
    from harness.errors import UserError

    store, _ = echo_store
    config = load_model_config(config_file(tmp_path, server))
    with pytest.raises(UserError, match="no prompts of task family mbpp in the store \\(it has echo\\)"):
        plan(store, config, ExtendSpec(families=("mbpp",)))
    with pytest.raises(UserError, match="has no prompts"):
        plan(Store(tmp_path / "empty"), config, ExtendSpec())


def _extend_cmd(store: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "extend", "--model", str(config), "--store", str(store), *extra]


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_does_only_what_is_missing(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    write_prompts(tmp_path / "echo.jsonl", n=40)
    import_prompts(Store(store_dir), "generic", tmp_path / "echo.jsonl")
    with FaultServer(FaultPlan(completion_tokens=1, delay_s=(0.15, 0.15))) as server:
        config = config_file(tmp_path, server, max_concurrency=1)
        proc = subprocess.Popen(_extend_cmd(store_dir, config, "--commit-every", "3"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:  # kill after two commits of outcomes
            if len(list((store_dir / "outcomes" / "_delta_log").glob("*.json"))) >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = Store(store_dir).outcomes(["sample_id"], models=["echo-model"])
        assert 0 < len(first) < 40 and first["sample_id"].is_unique
        asked_before = set(server.ledger.served())
        done = subprocess.run(_extend_cmd(store_dir, config), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        final = Store(store_dir).outcomes(["sample_id", "score", "error"], models=["echo-model"])
        assert len(final) == 40 and final["sample_id"].is_unique
        # the rerun asked only for prompts without an outcome after the kill
        asked_after = [a.sample_id for a in server.ledger.attempts if a.outcome == "ok"]
        rerun = set(asked_after) - asked_before
        assert rerun and not rerun & set(first["sample_id"])
        assert f"{40 - len(first)} prompts to do ({len(first)} already done)" in done.stdout.replace("\n", " ")


@pytest.mark.slow
def test_two_models_extend_the_same_store_at_once(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    write_prompts(tmp_path / "echo.jsonl", n=30)
    import_prompts(Store(store_dir), "generic", tmp_path / "echo.jsonl")
    with FaultServer(FaultPlan(completion_tokens=1, delay_s=(0.02, 0.05))) as server:
        configs = [config_file(tmp_path, server, name=f"model-{k}") for k in range(2)]
        procs = [subprocess.Popen(_extend_cmd(store_dir, c, "--commit-every", "4"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-2000:]
    outcomes = Store(store_dir).outcomes(["sample_id", "model"])
    assert outcomes.groupby("model").size().to_dict() == {"model-0": 30, "model-1": 30}
    assert not outcomes.duplicated().any()


def test_stale_config_is_redone_and_imported_outcomes_are_not(echo_store, server, tmp_path, ray_local) -> None:
    store, _ = echo_store
    path = config_file(tmp_path, server)
    config = load_model_config(path)
    extend(store, config, ExtendSpec(limit=4))
    doc = yaml.safe_load(path.read_text())
    doc["sampling"]["temperature"] = 0.7  # changes the answers: a new config hash
    path.write_text(yaml.safe_dump(doc))
    work, done = plan(store, load_model_config(path), ExtendSpec(limit=4))
    assert len(work) == 4 and done == 0
    # outcomes without a config hash were imported (RouterBench's): they count as done
    imported = store.outcomes(models=["echo-model"]).assign(config_hash=None).drop(columns="created_at")
    store.append(outcomes=imported, overwrite=True)
    work, done = plan(store, load_model_config(path), ExtendSpec(limit=4))
    assert done == 4 - int(imported["score"].isna().sum()) and len(work) == int(imported["score"].isna().sum())


def test_outcomes_json_for_multi_turn_prompts(tmp_path, server, ray_local) -> None:
    """MT-Bench style prompts are answered turn by turn, the response a JSON list of the answers:
    turn 2 is asked with turn 1 and the model's answer to it."""
    store = Store(tmp_path / "store")
    import_prompts(store, "mtbench", require_shared(SHARED_DATA / "mtbench"))
    config = load_model_config(config_file(tmp_path, server))
    judge = config_file(tmp_path, server, name="echo-judge")
    report = extend(store, config, ExtendSpec(limit=2, grader_options={"judge": str(judge)}))
    out = store.outcomes(models=["echo-model"]).set_index("sample_id")
    turns = {s: json.loads(m)["turns"] for s, m in store.prompts(["sample_id", "meta"]).itertuples(index=False)}
    assert report.appended == 2
    for sid, row in out.iterrows():
        answers = json.loads(row["response"])
        assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)
        # the last request for this prompt is turn 2: turn 1, the model's answer to it, turn 2
        assert server.ledger.bodies[sid]["messages"][-3:] == [
            {"role": "user", "content": turns[sid][0]},
            {"role": "assistant", "content": answers[0]},
            {"role": "user", "content": turns[sid][1]},
        ]
        assert server.ledger.outcomes(sid) == ["ok", "ok"]
    # the echo judge gives no [[rating]]: a grader error, recorded, not a 0
    assert out["error"].str.startswith("grader:").all() and out["score"].isna().all()
    assert out["grader"].str.startswith("mtbench-judge@1+echo-judge+prompts-").all()


def test_mtbench_without_a_judge_keeps_the_answers_for_regrade(tmp_path, server, ray_local) -> None:
    store = Store(tmp_path / "store")
    import_prompts(store, "mtbench", require_shared(SHARED_DATA / "mtbench"))
    report = extend(store, load_model_config(config_file(tmp_path, server)), ExtendSpec(limit=1))
    out = store.outcomes(models=["echo-model"])
    assert report.appended == 1 and out["response"].notna().all() and out["grader"].isna().all()
    assert out["error"].tolist() == ["grader:mtbench-judge needs a model config for its option 'judge': pass --judge model_configs/<model>.yaml"]


def test_the_cli_flags_are_grader_options() -> None:
    from harness.cli import _grader_options

    assert _grader_options(Path("j.yaml"), True) == {"judge": "j.yaml", "unsafe_sandbox": True}
    assert _grader_options(None, False) == {} and ExtendSpec().grader_options == {}


def test_preflight_reads_the_keys_of_the_graders_model_options(tmp_path, monkeypatch) -> None:
    from harness.errors import UserError
    from harness.extend import preflight

    model = load_model_config(config_file(tmp_path, FaultServerStub))
    judge = config_file(tmp_path, FaultServerStub, name="keyed-judge")
    judge.write_text(judge.read_text() + "api_key_env: ROUTERBENCH_TEST_JUDGE_KEY\n")
    monkeypatch.delenv("ROUTERBENCH_TEST_JUDGE_KEY", raising=False)
    spec = ExtendSpec(grader_options={"judge": str(judge)})
    assert preflight(model, spec, {"exact-match"})[1].grader_options == {"judge": str(judge)}  # no grader of the run takes it
    with pytest.raises(UserError, match="keyed-judge.yaml: field 'api_key_env': environment variable ROUTERBENCH_TEST_JUDGE_KEY is not set"):
        preflight(model, spec, {"exact-match", "mtbench-judge"})
    monkeypatch.setenv("ROUTERBENCH_TEST_JUDGE_KEY", "sk-judge")
    held = preflight(model, spec, {"mtbench-judge"})[1].grader_options["judge"]
    monkeypatch.delenv("ROUTERBENCH_TEST_JUDGE_KEY")
    assert held.name == "keyed-judge" and held.api_key() == "sk-judge"


class FaultServerStub:
    url = "http://127.0.0.1:9/v1"


def test_extend_answers_routerbench_wide_mtbench_rows_turn_by_turn(tmp_path, server, ray_local) -> None:
    """RouterBench's wide layout stores an MT-Bench prompt as the list of its two turns (``meta.turns``
    is then their count): extend plans it, asks turn 1, then turn 2 with the model's own answer."""
    from harness.outcome_import import load_sources

    turns = {
        "mtbench.dev.0": ["Name three primary colours briefly", "Now name three secondary colours"],
        "mt-bench.dev.1": ["Write one word about rain", "Now one word about snow"],  # the family's other spelling
    }
    wide = pd.DataFrame(
        {
            "sample_id": list(turns),
            "prompt": [str(t) for t in turns.values()],
            "eval_name": [sid.split(".")[0] for sid in turns],
            "gpt-4-1106-preview": [0.9, 0.8],
            "gpt-4-1106-preview|model_response": ["['a', 'b']", "['c', 'd']"],
            "gpt-4-1106-preview|total_cost": [0.01, 0.01],
        }
    )
    wide.to_csv(tmp_path / "routerbench_mtbench.csv")
    store = Store(tmp_path / "store")
    batch = load_sources([str(tmp_path / "routerbench_mtbench.csv")])
    store.append(batch.prompts, batch.outcomes)
    assert [json.loads(m)["turns"] for m in store.prompts(["meta"])["meta"]] == [2, 2]  # a count, not the turns
    config = load_model_config(config_file(tmp_path, server))
    work, done = plan(store, config, ExtendSpec())
    assert len(work) == 2 and done == 0 and work["messages"].isna().all()  # rendered turn by turn while generating
    report = extend(store, config, ExtendSpec(grader_options={"judge": str(config_file(tmp_path, server, name="echo-judge"))}))
    assert report.planned == report.appended == 2
    out = store.outcomes(models=["echo-model"]).set_index("sample_id")
    for sid, (q1, q2) in turns.items():
        answers = json.loads(out.at[sid, "response"])
        assert len(answers) == 2 and all(answers)
        # the last request for this prompt is turn 2: turn 1, the model's answer to it, turn 2
        assert server.ledger.bodies[sid]["messages"] == [
            {"role": "user", "content": q1},
            {"role": "assistant", "content": answers[0]},
            {"role": "user", "content": q2},
        ]
    assert len(server.ledger.attempts) == 4  # two turns per prompt, nothing asked twice
