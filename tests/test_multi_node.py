"""Several Ray nodes on this machine, joined by `ray start --address` as on a real cluster: a head
that runs no work (``--num-cpus 0``, as cluster.yaml's head) and two workers with distinct
resources. `evaluate` spreads its routing tasks over both and computes what one node computes;
`extend` loses the node that holds its engine (SIGKILL of that node's raylet) mid-run and still
ends with every outcome stored once.

Only this cluster's processes are stopped (:mod:`tests.ray_processes`, its own ``--temp-dir``)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from harness.store import Store
from tests.conftest import start_ray_head, start_ray_worker, submit_job
from tests.echo import echo_config, echo_scores, write_echo_prompts
from tests.ray_processes import ray_processes, stop_ray

pytestmark = pytest.mark.slow

# The GCS declares a silent raylet dead after period × threshold (Ray's default: 3 s × 5).
FAST_NODE_DEATH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4", "RAY_health_check_timeout_ms": "500"}


@pytest.fixture()
def three_nodes():
    temp_dir = tempfile.mkdtemp(prefix="rbm-", dir="/tmp")  # Ray's socket paths must stay short
    head = start_ray_head(temp_dir, num_cpus=0, resources="{}", extra_env=FAST_NODE_DEATH)
    try:
        # both may hold the engine (egress); only b runs model-written code (sandbox)
        workers = {"a": start_ray_worker(head, 2, '{"egress": 1}'), "b": start_ray_worker(head, 2, '{"egress": 1, "sandbox": 2}')}
        yield {**head, "workers": workers}
    finally:
        stop_ray([*head["procs"], *ray_processes(temp_dir)])
        assert ray_processes(temp_dir) == []
        shutil.rmtree(temp_dir, ignore_errors=True)


def job_ok(done: subprocess.CompletedProcess) -> str:
    printed = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in printed.lower(), printed[-4000:]
    return printed


def test_evaluate_spreads_routing_over_two_nodes_with_one_nodes_results(three_nodes, imported_store, tmp_path: Path) -> None:
    """The same evaluation as a job on the cluster and on a local one-node Ray: the same points and
    AIQ (bootstrap intervals included), and on the cluster the routing tasks ran on both workers."""
    args = ["--store", imported_store.uri, "--tasks", "mbpp,winogrande", "--routers", "knn,svm,mlp,oracle,random", "--bootstrap", "50"]
    local = subprocess.run([sys.executable, "-m", "harness.cli", "evaluate", *args, "--out", str(tmp_path / "one")], capture_output=True, text=True, timeout=900)
    assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-3000:]
    printed = job_ok(submit_job(three_nodes, ["routerbench", "evaluate", *args, "--out", str(tmp_path / "three")]))
    assert "ran on 2 Ray node(s)" in printed, printed[-3000:]

    one, three = (pd.read_parquet(tmp_path / d / "points.parquet") for d in ("one", "three"))
    pd.testing.assert_frame_equal(one, three)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "one" / "aiq.csv"), pd.read_csv(tmp_path / "three" / "aiq.csv"))
    placement = pd.DataFrame(json.loads((tmp_path / "three" / "run.json").read_text())["placement"])
    assert set(placement["node_id"]) == set(three_nodes["workers"].values())  # both workers, never the head
    assert len(placement) == len(placement[["task_family", "router", "config"]].drop_duplicates())
    assert json.loads((tmp_path / "one" / "run.json").read_text())["placement"] is not None  # one node: recorded too


def stored(store: Path) -> list[str]:
    """The sample_ids with an outcome in the store now (none before its first commit)."""
    if not (store / "outcomes").exists():
        return []
    return Store(store).outcomes(["sample_id"])["sample_id"].tolist()


def raylet_of(cluster: dict, node: str) -> psutil.Process:
    raylets = []
    for proc in ray_processes(cluster["temp_dir"]):
        try:
            if proc.name() == "raylet" and any(node in arg for arg in proc.cmdline()):
                raylets.append(proc)
        except psutil.Error:  # a worker that ended since it was listed
            continue
    assert len(raylets) == 1, raylets
    return raylets[0]


def engine_node(cluster: dict, limit_s: float = 120) -> str:
    """The node of the engine's API callers (they run beside the stage that took ``egress``)."""
    from ray.util.state import list_actors

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        alive = list_actors(address=cluster["address"], filters=[("class_name", "=", "ApiCaller"), ("state", "=", "ALIVE")])
        if alive:
            return alive[0].node_id
        time.sleep(0.2)
    raise AssertionError("no engine actor came up")


def test_extend_loses_its_engines_node_mid_run_and_still_stores_every_outcome_once(three_nodes, tmp_path: Path) -> None:
    """40 prompts, the engine (pinned to ``egress`` nodes) on one worker: once 10 answers were
    served, that worker's raylet is SIGKILLed. The job still succeeds: what came back is kept,
    the rest is answered on the other worker; every prompt has one graded outcome, no commit wrote
    a key twice, and a rerun finds nothing to do."""
    from harness.generation.testing.fault_server import FaultPlan, FaultServer

    n = 40
    store = tmp_path / "store"
    rows = write_echo_prompts(tmp_path / "echo.jsonl", n)
    imported = subprocess.run([sys.executable, "-m", "harness.cli", "prompts", "import", "generic", str(tmp_path / "echo.jsonl"), "--store", str(store)], capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-2000:]
    log = tmp_path / "placement.json"
    # ~0.25 s an answer, two at a time: ~5 s of answering, the kill lands after a quarter of it
    with FaultServer(FaultPlan(completion_tokens=1, delay_s=(0.2, 0.3))) as server:
        limits = {"timeout_s": 5.0, "backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 2, "max_concurrency": 2}
        model = echo_config(tmp_path, server.url, "echo-egress", limits=limits, resources={"custom": {"egress": 1}})
        cmd = ["routerbench", "extend", "--model", str(model), "--store", str(store), "--commit-every", "4", "--placement-log", str(log)]
        job: dict = {}
        runner = threading.Thread(target=lambda: job.update(done=submit_job(three_nodes, cmd, timeout=900)))
        runner.start()
        lost = engine_node(three_nodes)
        assert lost in three_nodes["workers"].values()
        deadline = time.monotonic() + 300
        while not (kept := stored(store)):  # the first graded answers are committed: kill now
            assert time.monotonic() < deadline and runner.is_alive(), "nothing was committed"
            time.sleep(0.1)
        raylet_of(three_nodes, lost).kill()  # SIGKILL: the node is gone without a goodbye
        runner.join(900)
        printed = job_ok(job["done"])
        served = server.ledger.served()

    lines = printed.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("echo-egress: "))
    print(lines[at], *itertools.takewhile(lambda line: line.startswith("  "), lines[at + 1 :]), sep="\n")  # the README's transcript (pytest -s)
    assert "resumed after a lost Ray node or worker" in printed, printed[-4000:]
    assert "nodes (CPU 2, egress 1): 1 up" in printed and "nodes (CPU 2, egress 1, sandbox 2): 1 up" in printed  # the lost node named too
    outcomes = Store(store).outcomes(["sample_id", "model", "score", "error"])
    assert len(outcomes) == n and outcomes["sample_id"].is_unique and outcomes["error"].isna().all()
    assert outcomes.set_index("sample_id")["score"].sort_index().equals(echo_scores(rows).sort_index())
    commits = Store(store).history().query("table == 'outcomes'")
    assert commits["rows_added"].sum() == n and commits["rows_updated"].sum() == 0  # no key written twice
    assert set(served) == set(rows["sample_id"]) and sum(served.values()) < 2 * n  # only what was in flight was asked again

    placed = json.loads(log.read_text())["outcomes"]
    survivor = next(w for w in three_nodes["workers"].values() if w != lost)
    generated = pd.Series({r["sample_id"]: r["generated_on"] for r in placed})
    assert generated.index.is_unique and len(generated) == n
    # answered before the loss on the lost node (what was committed by then among it), the rest after it
    # on the other; what came back from the lost node was kept, never asked again
    assert set(generated) == {lost, survivor} and (generated[kept] == lost).all()
    assert all(served[s] == 1 for s in generated[generated == lost].index)

    again = job_ok(submit_job(three_nodes, cmd, timeout=600))
    assert f"0 prompts to do ({n} already done)" in " ".join(again.split()), again[-3000:]
