"""The store, imports and evaluation results on a real S3-compatible server (moto on 127.0.0.1), and
one-line errors for an endpoint nobody listens on and a bucket that does not exist."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.dataset import Store
from harness.errors import UserError

from tests.conftest import free_port


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.fixture()
def bucket(s3_server) -> str:
    name = f"rb-{uuid.uuid4().hex[:10]}"
    s3_server.make_bucket(name)
    return name


def keys(bucket: str, s3_server) -> list[str]:
    """The bucket's objects, without the directory markers pyarrow creates."""
    return sorted(o["Key"] for o in s3_server.client.list_objects_v2(Bucket=bucket).get("Contents", []) if not o["Key"].endswith("/"))


def test_store_import_and_compact_on_s3(s3_server, bucket: str, routerbench_dir: Path) -> None:
    """Import from an s3:// source into an s3:// store, twice (the second adds nothing), then compact."""
    s3_server.client.upload_file(str(routerbench_dir / "mbpp_test.csv"), bucket, "sources/mbpp_test.csv")
    store_uri = s3_server.uri(bucket, "store")
    first = cli("import", s3_server.uri(bucket, "sources/mbpp_test.csv"), "--store", store_uri)
    assert first.returncode == 0, first.stderr
    assert "imported 128 prompts and 1408 outcomes" in first.stdout
    again = cli("import", s3_server.uri(bucket, "sources/mbpp_test.csv"), "--store", store_uri)
    assert "imported 0 prompts and 0 outcomes" in again.stdout and "already there: 128 prompts, 1408 outcomes" in again.stdout
    assert "other values" not in again.stdout

    store = Store(store_uri)
    store.append(outcomes=pd.DataFrame({"sample_id": ["mbpp.dev.1"], "model": ["extra"], "score": [0.5], "cost_usd": [0.1]}))
    before = store.outcomes().sort_values(["sample_id", "model"], ignore_index=True)
    assert len(before) == 1409 and len(store.commits()) == 2
    assert store.compact() == 2
    after = Store(store_uri)
    assert len(after.commits()) == 1
    pd.testing.assert_frame_equal(after.outcomes().sort_values(["sample_id", "model"], ignore_index=True), before)
    # the replaced commits and their files are gone from the bucket
    stored = [k for k in keys(bucket, s3_server) if k.startswith("store/")]
    assert sum(k.startswith("store/_commits/") for k in stored) == 1
    assert sum(k.endswith(".parquet") for k in stored) == 1 + 12  # prompts + one file per model


def test_evaluate_and_report_to_s3(s3_server, bucket: str, routerbench_dir: Path, tmp_path: Path) -> None:
    """`evaluate --out s3://…` writes results there; `report --out s3://…` reads them back and redraws the plot there."""
    store = str(tmp_path / "store")
    out = s3_server.uri(bucket, "results")
    args = ["evaluate", "--store", store, "--data", str(routerbench_dir / "mbpp_test.csv"), "--out", out, "--routers", "llm,oracle", "--bootstrap", "0", "--sequential"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert keys(bucket, s3_server) == ["results/aiq.csv", "results/mbpp.png", "results/points.parquet", "results/run.json"]
    s3_server.client.delete_object(Bucket=bucket, Key="results/mbpp.png")
    done = cli("report", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "mbpp: AIQ" in done.stdout and f"redrew 1 plots in {out}/" in done.stdout
    png = s3_server.client.get_object(Bucket=bucket, Key="results/mbpp.png")["Body"].read()
    assert png[:4] == b"\x89PNG" and len(png) > 20_000
    empty = cli("report", "--out", s3_server.uri(bucket, "nothing-here"))
    assert "no evaluation results there" in one_line_error(empty)


@pytest.fixture()
def dead_endpoint(s3_server):
    """An S3 URI on a port nobody listens on (the keys of the moto fixture are set)."""
    port = free_port()
    return lambda path: f"s3://rb-bucket/{path}?endpoint_override=127.0.0.1:{port}&scheme=http"


@pytest.mark.parametrize(
    "args",
    [
        lambda uri, src, tmp: ["data", "info", "--store", uri("store")],
        lambda uri, src, tmp: ["import", str(src), "--store", uri("store")],
        lambda uri, src, tmp: ["import", uri("sources/mbpp_test.csv"), "--store", str(tmp / "store")],
        lambda uri, src, tmp: ["report", "--out", uri("results")],
        lambda uri, src, tmp: ["evaluate", "--store", str(tmp / "store"), "--out", uri("results")],
    ],
    ids=["store", "import-into", "import-from", "report-out", "evaluate-out"],
)
def test_unreachable_endpoint_is_a_quick_one_line_error(dead_endpoint, routerbench_dir: Path, tmp_path: Path, args) -> None:
    argv = args(dead_endpoint, routerbench_dir / "mbpp_test.csv", tmp_path)
    started = time.monotonic()
    err = one_line_error(cli(*argv))
    assert time.monotonic() - started < 30  # one probe, no retries: mostly the interpreter's start
    uri = next(a for a in argv if a.startswith("s3://"))
    assert uri in err and "cannot reach the object store" in err, err
    assert not (tmp_path / "store").exists()


def test_missing_bucket_is_a_one_line_error(s3_server, routerbench_dir: Path, tmp_path: Path) -> None:
    store_uri = s3_server.uri("no-such-bucket", "store")
    for argv in (
        ["import", str(routerbench_dir / "mbpp_test.csv"), "--store", store_uri],
        ["data", "info", "--store", store_uri],
        ["report", "--out", s3_server.uri("no-such-bucket", "results")],
        ["import", s3_server.uri("no-such-bucket", "sources/x.csv"), "--store", str(tmp_path / "store")],
    ):
        err = one_line_error(cli(*argv))
        assert "bucket 'no-such-bucket' does not exist" in err and "s3://no-such-bucket/" in err, err
    assert "no-such-bucket" not in [b["Name"] for b in s3_server.client.list_buckets()["Buckets"]]
    assert not (tmp_path / "store").exists()


def test_store_api_raises_user_errors(s3_server) -> None:
    """In-process callers (pipeline, evaluate) get the same UserError, not an OSError from pyarrow."""
    with pytest.raises(UserError, match="bucket 'absent-bucket' does not exist"):
        Store(s3_server.uri("absent-bucket", "s")).outcomes()
