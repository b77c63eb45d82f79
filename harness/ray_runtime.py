"""Ray for every command: join ``--address`` / ``RAY_ADDRESS`` (a cluster, ``ray job submit``), or
start a private local instance."""

from __future__ import annotations

import logging
import os
from types import ModuleType

#: Custom resource of the nodes allowed to run model-written code (cluster.yaml's grader workers).
SANDBOX_RESOURCE = "sandbox"


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
            ray.init(address="local", logging_level=logging.ERROR, include_dashboard=False, resources={SANDBOX_RESOURCE: cpus})
        else:
            ray.init(address=address, logging_level=logging.ERROR)
    return ray
