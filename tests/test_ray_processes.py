"""Tests stop only the Ray they started: a second head on this machine is stopped by its own
``--temp-dir`` while the test session's local Ray keeps working."""

from __future__ import annotations

import shutil
import tempfile

import psutil

from tests.conftest import start_ray_head
from tests.ray_processes import ray_processes, stop_ray


def test_stop_ray_ends_only_its_own_head(ray_local) -> None:
    local_before = {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("raylet", "gcs_server")}
    assert local_before, "the session's local Ray should be running"
    temp_dir = tempfile.mkdtemp(prefix="rbt-", dir="/tmp")
    head = start_ray_head(temp_dir, num_cpus=1, resources="{}")
    try:
        procs = head["procs"]
        names = {p.name() for p in procs}
        assert {"raylet", "gcs_server"} <= names, names
        assert not {p.pid for p in procs} & local_before
        assert stop_ray(procs) >= len(procs)  # the recorded ones and their descendants
        assert not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not ray_processes(temp_dir)  # nothing of this head is left
    finally:
        stop_ray(head["procs"])
        shutil.rmtree(temp_dir, ignore_errors=True)
    # the session's own Ray is untouched
    assert local_before <= {p.pid for p in psutil.process_iter()}
    assert ray_local.get(ray_local.remote(lambda: 41 + 1).remote(), timeout=60) == 42
