"""What a new user ran into, as one-line errors that change nothing: a wide file whose model has no
cost column, and `generate` failing on its config without leaving an output file behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.store import Store

MODELS = 11


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=300, env=env)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def store_copy(imported_store: Store, tmp_path: Path) -> Path:
    dest = tmp_path / "store"
    shutil.copytree(imported_store.uri, dest)
    return dest


def mbpp_without(routerbench_dir: Path, tmp_path: Path, *columns: str, name: str = "mbpp_nocost.csv", **extra) -> Path:
    df = pd.read_csv(routerbench_dir / "mbpp_test.csv").drop(columns=list(columns)).assign(**extra)
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "dropped",
    [("claude-v2|total_cost",), ("claude-v2|total_cost", "claude-v2|model_response")],
    ids=["with-responses", "scores-only"],
)
def test_a_model_without_its_cost_column_is_an_error_naming_column_and_file(routerbench_dir: Path, tmp_path: Path, store_copy: Path, dropped) -> None:
    before = tree(store_copy)
    path = mbpp_without(routerbench_dir, tmp_path, *dropped)
    err = one_line_error(cli("import", str(path), "--store", str(store_copy)))
    assert err == (
        "error: mbpp_nocost.csv: model column 'claude-v2' has no 'claude-v2|total_cost' column; "
        "add the costs, or pass --missing-cost skip-model to import the other models"
    )
    assert tree(store_copy) == before


def test_missing_cost_skip_model_imports_the_others_and_names_the_skipped(routerbench_dir: Path, tmp_path: Path) -> None:
    path = mbpp_without(routerbench_dir, tmp_path, "claude-v2|total_cost", "gpt-4-1106-preview|total_cost")
    store = tmp_path / "fresh"
    done = cli("import", str(path), "--store", str(store), "--missing-cost", "skip-model")
    assert done.returncode == 0, done.stderr
    assert f"imported 128 prompts and {128 * (MODELS - 2)} outcomes" in done.stdout
    assert "skipped 2 models without a '<model>|total_cost' column: claude-v2, gpt-4-1106-preview" in done.stdout
    models = Store(store).models()
    assert len(models) == MODELS - 2 and "claude-v2" not in models and "gpt-4-1106-preview" not in models


def test_a_numeric_column_that_is_no_model_is_not_mistaken_for_one(routerbench_dir: Path, tmp_path: Path) -> None:
    """Only score-like columns count: a difficulty level of 1-5 is left alone, as before."""
    path = mbpp_without(routerbench_dir, tmp_path, name="mbpp_extra.csv", difficulty=3)
    done = cli("import", str(path), "--store", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    assert len(Store(tmp_path / "s").models()) == MODELS


def test_bad_missing_cost_value_is_named(routerbench_dir: Path, tmp_path: Path) -> None:
    err = one_line_error(cli("import", str(routerbench_dir / "mbpp_test.csv"), "--store", str(tmp_path / "s"), "--missing-cost", "ignore"))
    assert "--missing-cost must be one of error, skip-model, not 'ignore'" in err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------- generate
def write_config(path: Path, **fields) -> Path:
    doc = {"name": "cfg-test", "provider": "openai_compatible", "model": "m", "base_url": "http://127.0.0.1:9/v1", "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}
    doc.update(fields)
    path.write_text(yaml.safe_dump(doc))
    return path


def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"sample_id": f"g{i}", "prompt": f"q{i}"}) + "\n" for i in range(3)))
    return path


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"api_key_env": "RB_TEST_KEY_THAT_IS_NOT_SET"}, "field 'api_key_env': environment variable RB_TEST_KEY_THAT_IS_NOT_SET is not set"),
        ({"provider": "openai", "base_url": None}, "field 'api_key_env': provider openai needs the name of the variable"),
        ({"sampling": {"temperature": "hot"}}, "field 'sampling.temperature'"),
        ({"chat": {"template": "no-such-template.jinja"}}, "field 'chat.template': cannot read"),
    ],
    ids=["unset-key", "no-key-variable", "bad-field", "missing-template"],
)
def test_generate_failing_on_its_config_leaves_no_output_file(tmp_path: Path, fields: dict, message: str) -> None:
    config = write_config(tmp_path / "model.yaml", **fields)
    out_dir = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RB_TEST_KEY_THAT_IS_NOT_SET"}
    err = one_line_error(cli("generate", "--model", str(config), "--prompts", str(prompts_file(tmp_path)), "--out", str(out_dir / "o.parquet"), env=env))
    assert "model.yaml" in err and message in err, err
    assert not out_dir.exists()


def test_generate_whose_engine_cannot_start_leaves_no_output_file(ray_local, tmp_path: Path) -> None:
    """A config that only the engine can reject (no GGUF file there) fails before the first answer: no file."""
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.errors import UserError

    config = write_config(tmp_path / "local.yaml", provider="llama_cpp", model="missing-model.gguf", base_url=None)
    out = tmp_path / "out" / "o.parquet"
    res = CliRunner().invoke(app, ["generate", "--model", str(config), "--prompts", str(prompts_file(tmp_path)), "--out", str(out)])
    assert isinstance(res.exception, UserError) and "no GGUF file at missing-model.gguf" in str(res.exception), res.output
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
