"""A fake multi-node Ray cluster for tests: cluster.yaml's node types as raylets on this machine.

The head is started like :func:`tests.conftest.start_ray_head` (own short ``--temp-dir``, explicit
ports, 127.0.0.1) plus ``RAY_FAKE_CLUSTER=1 --autoscaling-config``: its autoscaler then starts and
ends worker raylets itself. Those nodes live in the head's temp dir (Ray gives a node without
``--temp-dir`` the head's), so :func:`stop_fake_cluster` collects that dir's processes again at
teardown, beside those recorded at start, and ends only them: never ``ray stop --force`` or
``ray.cluster_utils.AutoscalingCluster`` (both end every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

from harness.fake_cluster_config import fake_cluster_config, load_cluster_yaml
from tests.conftest import free_port, start_ray_head
from tests.ray_processes import ray_processes, stop_ray


def start_fake_cluster(temp_dir: str, *, idle_timeout_minutes: float = 0.1, head_cpus: int = 2) -> dict:
    """A head (:func:`tests.conftest.start_ray_head`) whose autoscaler runs cluster.yaml's node types as fake nodes."""
    gcs = free_port()
    config = fake_cluster_config(load_cluster_yaml(), idle_timeout_minutes=idle_timeout_minutes, gcs_address=f"127.0.0.1:{gcs}", object_store_memory=200 * 2**20)
    cfg = Path(temp_dir) / "autoscaler.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    head = start_ray_head(temp_dir, num_cpus=head_cpus, resources="{}", extra_env=env, extra_args=["--autoscaling-config", str(cfg)], gcs_port=gcs)
    return {**head, "config": config}


def stop_fake_cluster(cluster: dict) -> int:
    """End the head's processes and those of the nodes its autoscaler started since (same temp dir)."""
    return stop_ray([*cluster["procs"], *ray_processes(cluster["temp_dir"])])


def nodes(cluster: dict) -> list[dict]:
    """Every node the cluster had (alive and dead), from Ray's state API."""
    from ray.util.state import list_nodes

    return [n.__dict__ if hasattr(n, "__dict__") else dict(n) for n in list_nodes(address=cluster["address"], detail=True, limit=1000)]


@contextlib.contextmanager
def fake_cluster(idle_timeout_minutes: float = 0.1) -> Iterator[dict]:
    """A fake cluster under its own temp dir for the ``with`` block; afterwards none of its processes is left."""
    temp_dir = tempfile.mkdtemp(prefix="rbf-", dir="/tmp")  # Ray's socket paths must stay short
    cluster = start_fake_cluster(temp_dir, idle_timeout_minutes=idle_timeout_minutes)
    try:
        yield cluster
    finally:
        stop_fake_cluster(cluster)
        assert ray_processes(temp_dir) == []
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_removed(cluster: dict, node_ids: Iterable[str], limit_s: float = 300) -> None:
    """Until none of ``node_ids`` is alive: idle scale-down awaited as a state (``limit_s`` only ends a hung test)."""
    node_ids = set(node_ids)
    deadline = time.monotonic() + limit_s
    while any(n["state"] == "ALIVE" for n in nodes(cluster) if n["node_id"] in node_ids):
        assert time.monotonic() < deadline, "idle worker nodes were not removed"
        time.sleep(1)
