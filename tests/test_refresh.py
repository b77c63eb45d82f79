"""regrade, reprice and refresh: upkeep of the store without re-asking models what they answered."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.store import Store
from harness.generation.testing.fault_server import FaultPlan, FaultServer
from harness.model_config import load_model_config
from harness.extend import ExtendSpec, extend
from harness.refresh import refresh, regrade, reprice, stale_grades
from harness.tasks.prompt_import import import_prompts
from tests.conftest import SHARED_DATA, require_shared
from tests.test_extend import N, config_file, expected_scores, write_prompts


@pytest.fixture()
def server():
    with FaultServer(FaultPlan(completion_tokens=1)) as s:
        yield s


@pytest.fixture()
def extended(tmp_path: Path, server, ray_local):
    store = Store(tmp_path / "store")
    rows = write_prompts(tmp_path / "echo.jsonl")
    import_prompts(store, "generic", tmp_path / "echo.jsonl")
    path = config_file(tmp_path, server)
    extend(store, load_model_config(path), ExtendSpec())
    return store, rows, path


def test_regrade_fixes_old_grader_versions_without_model_calls(extended, server) -> None:
    store, rows, _ = extended
    # only the answers without a gold answer wait for a grade
    assert sorted(stale_grades(store)["sample_id"]) == sorted(rows.loc[rows["gold"].isna(), "sample_id"])
    out = store.outcomes(models=["echo-model"])
    graded = out["error"].isna()
    tampered = out[graded].assign(grader="exact-match@0", score=1.0 - out.loc[graded, "score"]).drop(columns="created_at")
    store.append(outcomes=tampered, overwrite=True)
    calls = len(server.ledger.attempts)
    assert len(stale_grades(store)) == len(tampered) + int((~graded).sum())  # + the gold:missing ones
    counts = regrade(store)
    assert counts == {"echo-model": N} and len(server.ledger.attempts) == calls
    fixed = store.outcomes(models=["echo-model"]).set_index("sample_id")
    ok = fixed[fixed["error"].isna()]
    pd.testing.assert_series_equal(ok["score"].sort_index(), expected_scores(rows).sort_index(), check_names=False)
    assert set(ok["grader"]) == {"exact-match@1"} and regrade(store) == {"echo-model": int((~graded).sum())}


def test_gold_added_later_is_graded_by_regrade(extended, tmp_path: Path) -> None:
    store, rows, _ = extended
    filled = rows.assign(gold=rows["gold"].fillna("maybe"))
    filled.to_json(tmp_path / "echo.jsonl", orient="records", lines=True)
    import_prompts(store, "generic", tmp_path / "echo.jsonl")
    regrade(store)
    out = store.outcomes(models=["echo-model"]).set_index("sample_id")
    assert out["error"].isna().all()
    was_missing = rows.loc[rows["gold"].isna(), "sample_id"]
    expected = (rows.set_index("sample_id").loc[was_missing, "prompt"] == "maybe").astype(float)
    pd.testing.assert_series_equal(out.loc[was_missing, "score"], expected, check_names=False)


def test_imported_outcomes_are_never_regraded(imported_store) -> None:
    assert stale_grades(imported_store).empty


def test_reprice_recomputes_costs_from_stored_tokens(extended, server, tmp_path: Path) -> None:
    store, _, path = extended
    doc = yaml.safe_load(path.read_text())
    doc["price"] = {"input_per_mtok": 3.0, "output_per_mtok": 5.0, "per_request": 0.001}
    path.write_text(yaml.safe_dump(doc))
    calls = len(server.ledger.attempts)
    counts, skipped = reprice(store, {"echo-model": load_model_config(path)})
    assert counts == {"echo-model": N} and skipped == {} and len(server.ledger.attempts) == calls
    out = store.outcomes(models=["echo-model"])
    expected = (out["input_tokens"] * 3.0 + out["output_tokens"] * 5.0) / 1e6 + 0.001
    pd.testing.assert_series_equal(out["cost_usd"], expected.astype(float), check_names=False)
    assert reprice(store, {"echo-model": load_model_config(path)})[0] == {}
    local = load_model_config(Path(__file__).resolve().parents[1] / "model_configs" / "gemma3-270m-local.yaml")
    assert reprice(store, {"echo-model": local.model_copy(update={"name": "echo-model"})})[1] == {"echo-model": "self-hosted: costed by device time, not tokens"}


def test_refresh_fills_what_is_missing_and_stale(tmp_path: Path, server, ray_local) -> None:
    store_dir = tmp_path / "store"
    write_prompts(tmp_path / "echo.jsonl")
    import_prompts(Store(store_dir), "generic", tmp_path / "echo.jsonl")
    models = tmp_path / "models"
    models.mkdir()
    path = config_file(models, server)
    keyed = yaml.safe_load(path.read_text()) | {"name": "needs-a-key", "api_key_env": "ROUTERBENCH_TEST_UNSET_KEY"}
    (models / "needs-a-key.yaml").write_text(yaml.safe_dump(keyed))
    args = ["refresh", "--models", str(models), "--store", str(store_dir), "--no-evaluate"]

    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"echo-model: {N} outcomes appended" in first.output and "skipped needs-a-key: ROUTERBENCH_TEST_UNSET_KEY is not set" in first.output
    calls = len(server.ledger.attempts)
    second = CliRunner().invoke(app, args)
    assert "echo-model: 0 outcomes appended" in second.output and len(server.ledger.attempts) == calls

    doc = yaml.safe_load(path.read_text())
    doc["sampling"]["temperature"] = 0.5  # a new config hash: every answer is stale
    path.write_text(yaml.safe_dump(doc))
    third = CliRunner().invoke(app, args)
    assert f"echo-model: {N} outcomes appended" in third.output
    out = Store(store_dir).outcomes(models=["echo-model"])
    assert len(out) == N and out["config_hash"].nunique() == 1


@pytest.mark.slow
def test_refresh_evaluates_afterwards(tmp_path: Path, server, ray_local) -> None:
    store_dir = tmp_path / "store"
    write_prompts(tmp_path / "echo.jsonl", n=60)
    import_prompts(Store(store_dir), "generic", tmp_path / "echo.jsonl")
    models = tmp_path / "models"
    models.mkdir()
    for name in ("echo-a", "echo-b"):
        config_file(models, server, name=name)
    out = tmp_path / "results"
    res = CliRunner().invoke(app, ["refresh", "--models", str(models), "--store", str(store_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    aiq = pd.read_csv(out / "aiq.csv")
    assert {"echo-a", "echo-b"} <= set(aiq.loc[aiq["router"] == "llm", "config"])


def test_refresh_carries_on_past_a_broken_config(tmp_path: Path, server, ray_local) -> None:
    store = Store(tmp_path / "store")
    write_prompts(tmp_path / "echo.jsonl")
    import_prompts(store, "generic", tmp_path / "echo.jsonl")
    models = tmp_path / "models"
    models.mkdir()
    config_file(models, server)
    (models / "a-unreadable.yaml").write_text("name: [unclosed\n")
    (models / "b-bad-field.yaml").write_text(yaml.safe_dump({"name": "x", "provider": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1", "prices": {}}))
    report = refresh(store, str(models))
    assert report.extended["echo-model"].appended == N and len(store.outcomes(models=["echo-model"])) == N
    assert sorted(report.broken) == [str(models / "a-unreadable.yaml"), str(models / "b-bad-field.yaml")]
    assert "not valid YAML" in report.broken[str(models / "a-unreadable.yaml")] and "prices" in report.broken[str(models / "b-bad-field.yaml")]


def judged_store(tmp_path: Path) -> tuple[Store, list[str]]:
    """Two MT-Bench answers of model ``m`` judged by ``echo-judge``: one failed, one by an older version."""
    store = Store(tmp_path / "store")
    import_prompts(store, "mtbench", require_shared(SHARED_DATA / "mtbench"))
    ids = sorted(store.prompts(["sample_id"])["sample_id"])[:2]
    store.append(
        outcomes=pd.DataFrame(
            {
                "sample_id": ids,
                "model": "m",
                "response": [json.dumps(["An answer.", "Another."])] * 2,
                "score": [None, 0.7],
                "cost_usd": 0.0,
                "input_tokens": 1,
                "output_tokens": 1,
                "latency_s": 0.1,
                "grader": ["mtbench-judge@1+echo-judge+prompts-00000000", "mtbench-judge@0+echo-judge+prompts-00000000"],
                "config_hash": "h",
                "error": ["grader:judge gave no rating in [[1-10]] form", None],
            }
        ).astype({"score": "float64"})
    )
    return store, ids


def test_a_judge_s_grades_are_regraded_only_with_its_model_s_config(tmp_path: Path, server, ray_local) -> None:
    store, ids = judged_store(tmp_path)
    assert regrade(store) == {} and stale_grades(store).empty  # without --judge, as before
    other = config_file(tmp_path, server, name="other-judge")
    assert regrade(store, grader_options={"judge": str(other)}) == {} and not server.ledger.attempts
    echo = config_file(tmp_path, server, name="echo-judge")
    assert sorted(stale_grades(store, grader_options={"judge": str(echo)})["sample_id"]) == ids
    assert regrade(store, grader_options={"judge": str(echo)}) == {"m": 2}
    assert server.ledger.served()["judge"] == 4  # two turns of two answers
    out = store.outcomes(models=["m"])
    assert out["grader"].str.fullmatch(r"mtbench-judge@1\+echo-judge\+prompts-[0-9a-f]{8}").all()
    assert out["error"].str.startswith("grader:judge gave no rating").all()  # the echo judge gives no [[rating]]
