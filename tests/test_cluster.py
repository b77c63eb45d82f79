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
    assert types["cpu-grader"]["resources"] == {"sandbox": 16}
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
