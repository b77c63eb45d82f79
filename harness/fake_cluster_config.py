"""``cluster.yaml`` as Ray's fake multi-node cluster: the same node types, run as raylets on one machine.

Ray's ``fake_multinode`` autoscaler provider starts each node the autoscaler asks for as a raylet on
this machine that advertises the resources its type declares (a ``gpu-1x`` node advertises a GPU it
does not have), so scaling from zero, placement by resources and idle scale-down run for real,
without a cloud. :func:`fake_cluster_config` derives that config from ``cluster.yaml``, so what the
tests run is what users deploy: the same worker node types with the same ``resources``,
``min_workers``/``max_workers``, the same ``max_workers``, ``upscaling_speed`` and
``idle_timeout_minutes`` (overridable: tests do not wait ten minutes). What differs:

* the provider (``fake_multinode``, nodes told apart by node id, no SSH updaters);
* the head type is named ``ray.head.default``: the provider tags its head with that name;
* cloud fields are emptied: ``node_config``, ``docker``, setup and start commands, file mounts. The
  grader type's setup (install bubblewrap, ``routerbench sandbox check``) is therefore not run:
  this machine's own bubblewrap serves every fake node.

Ray's wheel lacks the provider's defaults file (``fake_multi_node/example.yaml``), so the whole
config is written here and checked with Ray's ``validate_config`` (``prepare_config`` would look
for that file). Start a cluster with it (``tests/fake_cluster.py`` does)::

    RAY_FAKE_CLUSTER=1 AUTOSCALER_UPDATE_INTERVAL_S=1 ray start --head --autoscaling-config=CFG
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
#: The type name the fake provider gives its head node (``FAKE_HEAD_NODE_TYPE`` in Ray).
FAKE_HEAD_TYPE = "ray.head.default"
FAKE_PROVIDER = {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True}
_EMPTY_LISTS = (
    "cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands", "setup_commands",
    "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
)  # fmt: skip


def load_cluster_yaml(path: str | Path = CLUSTER_YAML) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def fake_cluster_config(
    cluster: dict[str, Any],
    *,
    idle_timeout_minutes: float | None = None,
    gcs_address: str | None = None,
    object_store_memory: int | None = None,
) -> dict[str, Any]:
    """The ``fake_multinode`` autoscaler config for ``cluster`` (a parsed ``cluster.yaml``).

    ``gcs_address`` (``host:port``) is where the fake nodes join; without it Ray assumes this
    machine's address on port 6379. ``object_store_memory`` (bytes), when given, caps each fake
    node's object store (by default every raylet would take 30% of this machine's memory)."""
    head_type = cluster["head_node_type"]
    types: dict[str, Any] = {}
    for name, node in cluster["available_node_types"].items():
        resources = dict(node.get("resources") or {})
        if name != head_type and not resources:
            raise ValueError(
                f"cluster.yaml: available_node_types.{name}.resources is empty: a fake node has only the resources its type declares (e.g. {{CPU: 8, GPU: 1}})"
            )
        if object_store_memory is not None and name != head_type:
            resources["object_store_memory"] = int(object_store_memory)
        fake = {"resources": resources, "node_config": {}, "min_workers": int(node.get("min_workers", 0)), "max_workers": int(node.get("max_workers", 0))}
        if node.get("labels"):
            fake["labels"] = dict(node["labels"])
        types[FAKE_HEAD_TYPE if name == head_type else name] = fake
    provider = dict(FAKE_PROVIDER, **({"gcs_address": gcs_address} if gcs_address else {}))
    config: dict[str, Any] = {
        "cluster_name": f"{cluster.get('cluster_name', 'cluster')}-fake",
        "max_workers": int(cluster.get("max_workers", sum(t["max_workers"] for t in types.values()))),
        "upscaling_speed": float(cluster.get("upscaling_speed", 1.0)),
        "idle_timeout_minutes": float(cluster.get("idle_timeout_minutes", 5) if idle_timeout_minutes is None else idle_timeout_minutes),
        "provider": provider,
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": FAKE_HEAD_TYPE,
        "available_node_types": types,
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
        "no_restart": False,
        **{key: [] for key in _EMPTY_LISTS},
    }
    return copy.deepcopy(config)


def worker_type_of(resources: dict[str, float], config: dict[str, Any]) -> str | None:
    """The worker node type of ``config`` whose declared resources equal a node's total resources
    (Ray's own ``memory``, ``object_store_memory`` and ``node:…`` entries aside)."""
    own = {k: float(v) for k, v in resources.items() if not k.startswith(("node:", "accelerator_type:")) and k not in ("memory", "object_store_memory")}
    for name, node in config["available_node_types"].items():
        declared = {k: float(v) for k, v in node["resources"].items() if k != "object_store_memory"}
        if name != config["head_node_type"] and declared == own:
            return name
    return None
