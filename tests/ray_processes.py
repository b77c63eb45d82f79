"""Stop a Ray that a test started, and nothing else.

``ray stop --force`` (and ``ray.cluster_utils.AutoscalingCluster.shutdown``) ends every Ray process
on the machine: another test's local Ray, a user's own cluster. A test's Ray is instead found once,
right after its ``ray start``, by its own ``--temp-dir`` (its daemons name that directory on their
command line; Ray's client server names a node id whose port files lie in it), and those PIDs are
what :func:`stop_ray` ends, with their descendants (workers, agents, job drivers). psutil refuses
to signal a PID that was reused since, so nothing else is hit.
"""

from __future__ import annotations

import re
from pathlib import Path

import psutil

_NODE_FILE = re.compile(r"_port_([0-9a-f]{56})$")


def node_ids(temp_dir: str | Path) -> set[str]:
    """Ids of the nodes whose session lies under ``temp_dir`` (from the port files Ray writes there)."""
    return {m.group(1) for f in Path(temp_dir).glob("session_*/*_port_*") if (m := _NODE_FILE.search(f.name))}


def ray_processes(temp_dir: str | Path) -> list[psutil.Process]:
    """The processes of the Ray started with ``--temp-dir temp_dir``: roots and all their descendants."""
    marks = {str(temp_dir), *node_ids(temp_dir)}
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}  # a shell that merely names the directory
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        # a Ray daemon of this temp dir: Ray's own program (its package path, or a ``ray::`` worker)
        # naming the directory or one of its nodes; any other process that names them is left alone
        ray_own = any("/ray/" in arg or arg.startswith("ray::") for arg in cmdline)
        if proc.pid not in spared and ray_own and any(mark in arg for arg in cmdline for mark in marks):
            found[proc.pid] = proc
            try:
                found.update({child.pid: child for child in proc.children(recursive=True)})
            except psutil.Error:
                pass
    return [p for pid, p in found.items() if pid not in spared]


def stop_ray(started: list[psutil.Process], grace_s: float = 10.0) -> int:
    """SIGTERM the processes recorded at start (:func:`ray_processes`) and their descendants now,
    SIGKILL what is left after ``grace_s``; returns how many processes it stopped."""
    procs: dict[int, psutil.Process] = {}
    for proc in started:
        try:
            if proc.is_running():  # same PID *and* start time: not a reused PID
                procs[proc.pid] = proc
                procs.update({child.pid: child for child in proc.children(recursive=True)})
        except psutil.Error:
            continue
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)
