"""`routerbench generate`: prompt files and store prompts in, raw outcomes out (store columns +
error), resumable; and the one-line errors for bad prompt files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from harness.store import Store
from harness.errors import UserError
from harness.generation import Request
from harness.generation.cli import generate
from harness.generation.outcomes import COLUMNS
from harness.generation.prompts import read_prompt_file
from harness.generation.testing import FaultPlan, FaultServer

ROOT = Path(__file__).resolve().parents[1]

app = typer.Typer()
app.command("generate")(generate)
app.command("noop")(lambda: None)  # two commands: `generate` is then a subcommand, as in harness.cli


def run(*args: str):
    return CliRunner().invoke(app, ["generate", *args])


@pytest.fixture(scope="module")
def server():
    with FaultServer(FaultPlan(completion_tokens=8)) as s:
        yield s


@pytest.fixture
def config_file(server: FaultServer, tmp_path: Path) -> Path:
    path = tmp_path / "fault.yaml"
    doc = {
        "name": "fault-model",
        "provider": "openai_compatible",
        "model": "m",
        "base_url": server.url,
        "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        "limits": {"backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 2, "timeout_s": 2},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_prompts_to_parquet(ray_local, server: FaultServer, config_file: Path, tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"sample_id": f"cli-{i}", "prompt": f"what is {i}?"} for i in range(6)])
    out = tmp_path / "out.parquet"
    result = run("--model", str(config_file), "--prompts", str(prompts), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "wrote 6 outcomes of fault-model" in result.output
    df = pd.read_parquet(out)
    assert tuple(df.columns) == COLUMNS
    assert sorted(df["sample_id"]) == sorted(f"cli-{i}" for i in range(6))
    assert (df["model"] == "fault-model").all() and df["error"].isna().all()
    assert (df["output_tokens"] == 8).all() and (df["input_tokens"] > 0).all()
    expected = (df["input_tokens"] * 1.0 + df["output_tokens"] * 2.0) / 1e6
    assert df["cost_usd"].tolist() == pytest.approx(expected.tolist())
    assert df["response"].str.startswith("what is").all()


def test_csv_prompts_with_limit(ray_local, config_file: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.csv"
    pd.DataFrame({"sample_id": [f"csv-{i}" for i in range(5)], "prompt": ["a, b", "c", "d", "e", "f"], "max_tokens": [3, 4, None, 2, 2]}).to_csv(prompts, index=False)
    out = tmp_path / "out.parquet"
    result = run("--model", str(config_file), "--prompts", str(prompts), "--out", str(out), "--limit", "3")
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out).set_index("sample_id")
    assert sorted(df.index) == ["csv-0", "csv-1", "csv-2"]
    assert df.loc[["csv-0", "csv-1", "csv-2"], "output_tokens"].tolist() == [3, 4, 8]


def test_failures_are_recorded_and_a_rerun_redoes_only_them(ray_local, server: FaultServer, config_file: Path, tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"sample_id": f"resume-{i}", "prompt": f"q{i}"} for i in range(4)])
    server.script("resume-2", ["400"])
    out = tmp_path / "out.parquet"
    first = run("--model", str(config_file), "--prompts", str(prompts), "--out", str(out))
    assert first.exit_code == 0, first.output
    assert "1 × bad_request" in first.output
    df = pd.read_parquet(out).set_index("sample_id")
    assert df.loc["resume-2", "error"] == "engine:bad_request" and pd.isna(df.loc["resume-2", "response"])
    second = run("--model", str(config_file), "--prompts", str(prompts), "--out", str(out))
    assert second.exit_code == 0, second.output
    assert "keeping 3 answers" in second.output
    df = pd.read_parquet(out).set_index("sample_id")
    assert len(df) == 4 and df["error"].isna().all()
    assert [len(server.ledger.outcomes(f"resume-{i}")) for i in range(4)] == [1, 1, 2, 1]


def test_tasks_read_the_stores_prompts(ray_local, config_file: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append(
        pd.DataFrame(
            {
                "sample_id": ["mmlu-a.1", "mmlu-a.2", "grade-school-math.1"],
                "task": ["mmlu-a", "mmlu-a", "grade-school-math"],
                "task_family": ["mmlu", "mmlu", "grade-school-math"],
                "prompt": ["mmlu one", "mmlu two", "gsm one"],
            }
        )
    )
    out = tmp_path / "out.parquet"
    result = run("--model", str(config_file), "--tasks", "mmlu", "--store", str(tmp_path / "store"), "--out", str(out))
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    assert sorted(df["sample_id"]) == ["mmlu-a.1", "mmlu-a.2"] and df["response"].str.startswith("mmlu").all()
    bad = run("--model", str(config_file), "--tasks", "winogrande", "--store", str(tmp_path / "store"), "--out", str(out))
    assert isinstance(bad.exception, UserError) and "no prompts for task family 'winogrande'" in str(bad.exception)


def test_prompts_or_tasks_exactly_one(config_file: Path, tmp_path: Path) -> None:
    result = run("--model", str(config_file), "--out", str(tmp_path / "o.parquet"))
    assert isinstance(result.exception, UserError) and "exactly one of --prompts" in str(result.exception)


def test_an_outcomes_file_of_another_model_is_not_mixed(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    pd.DataFrame({c: ["x"] if c in ("sample_id", "model") else [None] for c in COLUMNS}).to_parquet(out)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"sample_id": "a", "prompt": "b"}])
    result = run("--model", str(config_file), "--prompts", str(prompts), "--out", str(out))
    assert isinstance(result.exception, UserError) and "holds outcomes of model 'x'" in str(result.exception)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.jsonl", '{"sample_id": "a", "prompt": "x"}\n{"sample_id": "b", "prompt": \n', r"p.jsonl:2: not valid JSON"),
        ("p.jsonl", '{"sample_id": "a"}\n', "missing column 'prompt'"),
        ("p.jsonl", '{"sample_id": "a", "prompt": "x"}\n{"sample_id": "a", "prompt": "y"}\n', "sample_id 'a' appears more than once"),
        ("p.jsonl", '{"sample_id": "a", "prompt": ""}\n', "sample 'a' has an empty or non-text prompt"),
        ("p.csv", "id,prompt\n1,x\n", "missing column 'sample_id'"),
        ("p.csv", "sample_id,prompt,max_tokens\n1,x,-3\n", "column 'max_tokens' must be a positive integer"),
        ("p.txt", "hello", "prompt files must be one of .csv, .jsonl"),
    ],
)
def test_bad_prompt_files_are_one_line_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError) as err:
        read_prompt_file(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value) and "\n" not in str(err.value)


def test_prompt_forms() -> None:
    assert Request.from_prompt("a", "hi").messages == [{"role": "user", "content": "hi"}]
    turns = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert Request.from_prompt("b", json.dumps(turns)).messages == turns
    assert Request.from_prompt("c", "[not json").messages == [{"role": "user", "content": "[not json"}]
    with pytest.raises(UserError, match="multi-turn"):
        Request.from_prompt("d", json.dumps(["turn one", "turn two"]))


@pytest.mark.slow
def test_generate_with_the_local_gemma(ray_local, tmp_path: Path) -> None:
    """The README's command: the real llama.cpp server with Gemma, end to end."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"sample_id": "g1", "prompt": "The capital of France is"}, {"sample_id": "g2", "prompt": "Two plus two"}])
    out = tmp_path / "gemma.parquet"
    result = run("--model", str(ROOT / "model_configs" / "gemma3-270m-local.yaml"), "--prompts", str(prompts), "--out", str(out))
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    assert len(df) == 2 and df["error"].isna().all() and (df["output_tokens"] > 0).all() and (df["cost_usd"] > 0).all()


def test_generate_is_extends_path_and_import_reads_its_output(ray_local, tmp_path: Path) -> None:
    """Same rendering and config hash as `extend`; `import` stores the answers ungraded and
    `regrade` grades them with the family's grader."""
    from harness.answering import work_rows
    from harness.model_config import load_model_config
    from harness.refresh import regrade
    from harness.tasks.prompt_import import import_prompts

    rows = [{"sample_id": f"e{i}", "prompt": w, "gold": "yes"} for i, w in enumerate(["yes", "no", "yes"])]
    write_jsonl(tmp_path / "echo.jsonl", rows)
    store = Store(tmp_path / "store")
    import_prompts(store, "generic", tmp_path / "echo.jsonl")
    out = tmp_path / "gen.parquet"
    with FaultServer(FaultPlan(completion_tokens=1)) as one_word:  # echoes the prompt's first word
        config_file = tmp_path / "one.yaml"
        config_file.write_text(yaml.safe_dump({"name": "fault-model", "provider": "openai_compatible", "model": "m", "base_url": one_word.url}))
        result = run("--model", str(config_file), "--tasks", "echo", "--store", store.uri, "--out", str(out))
    assert result.exit_code == 0, result.output
    gen = pd.read_parquet(out).sort_values("sample_id", ignore_index=True)
    assert gen["score"].isna().all() and gen["task"].eq("echo").all() and gen["prompt"].tolist() == ["yes", "no", "yes"]
    config = load_model_config(config_file)
    planned = work_rows(store.prompts(["sample_id", "task", "task_family", "prompt", "gold", "meta"]), config).sort_values("sample_id")
    assert gen["config_hash"].tolist() == planned["config_hash"].tolist()  # what extend would record

    from harness.cli import app as main_app

    imported = CliRunner().invoke(main_app, ["import", str(out), "--store", store.uri])
    assert imported.exit_code == 0, imported.output
    assert "3 answers without a score stored as grader:ungraded" in imported.output
    stored = store.outcomes(models=["fault-model"]).sort_values("sample_id")
    assert stored["error"].eq("grader:ungraded").all() and stored["score"].isna().all()
    assert regrade(store) == {"fault-model": 3}
    graded = store.outcomes(models=["fault-model"]).sort_values("sample_id")
    assert graded["score"].tolist() == [1.0, 0.0, 1.0] and graded["error"].isna().all()
    assert graded["response"].tolist() == gen["response"].tolist()


def test_generate_answers_multi_turn_prompts_turn_by_turn(ray_local, server: FaultServer, config_file: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    meta = json.dumps({"turns": ["first question", "second question"], "category": "writing"})
    store.append(pd.DataFrame({"sample_id": ["mt-1"], "task": ["mtbench"], "task_family": ["mtbench"], "prompt": ["first question"], "meta": [meta]}))
    out = tmp_path / "mt.parquet"
    result = run("--model", str(config_file), "--tasks", "mtbench", "--store", store.uri, "--out", str(out))
    assert result.exit_code == 0, result.output
    answers = json.loads(pd.read_parquet(out)["response"].iloc[0])
    assert len(answers) == 2 and answers[0].startswith("first") and answers[1].startswith("second")
    assert len(server.ledger.outcomes("mt-1")) == 2  # one call per turn
