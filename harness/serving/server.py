"""Start and stop the app on Ray Serve, and read a running one's status.

:func:`build_plan` does everything that can fail on bad input before Serve starts (settings,
model configs and keys, the store, fitting or loading a saved fit); :func:`start` deploys the plan
on a local Ray or the cluster at ``address`` and returns the base URL; ``/v1/chat/completions`` is
under it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from harness.embeddings import DEFAULT_EMBEDDER
from harness.errors import UserError
from harness.model_config import load_model_config
from harness.serving.fitted import TRAFFIC_FAMILY, Embedder, fit_routes
from harness.serving.plan import ServePlan
from harness.serving.saved_fit import FitSource, load_fits, save_fits
from harness.serving.setting import parse_settings
from harness.serving.traffic import FLUSH_S
from harness.serving.upstream import Upstream
from harness.sources import cache_dir
from harness.store import Store


def default_backend() -> str:
    """``fast`` (int8 ONNX, a few ms a prompt on a CPU) where onnxruntime is installed, else ``torch``."""
    return "fast" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def build_plan(
    store_uri: str,
    settings: Sequence[str],
    model_configs: Sequence[str | os.PathLike],
    *,
    family: str = TRAFFIC_FAMILY,
    tasks: Sequence[str] | None = None,
    embedder: str = DEFAULT_EMBEDDER,
    embed_backend: str | None = None,
    flush_s: float = FLUSH_S,
    save_fit: str | os.PathLike | None = None,
    fit: str | os.PathLike | None = None,
) -> ServePlan:
    """Parse, load and fit: the plan every replica starts from.

    ``fit``: load the routes saved in that directory instead of fitting (no embedding of the store,
    no cross-validation); ``save_fit``: write the fitted routes there (:mod:`~harness.serving.saved_fit`).
    """
    if fit is not None and save_fit is not None:
        raise UserError("--fit and --save-fit together: --fit loads a saved fit, --save-fit writes a new one; give one")
    parsed = parse_settings(list(settings))
    if not model_configs:
        raise UserError("serve needs the pool: --models model_configs/a.yaml --models model_configs/b.yaml")
    configs = [load_model_config(Path(p)) for p in model_configs]
    names = [c.name for c in configs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise UserError(f"--models: two configs are named '{dup}'")
    upstreams = {c.name: Upstream.of(c) for c in configs}
    if not family or family != family.strip():
        raise UserError(f"--family '{family}': give a task family name")
    store = Store(store_uri)
    emb = Embedder(embedder, embed_backend or default_backend())
    if fit is not None:
        routes = load_fits(fit, parsed, names, emb)
    else:
        versions = store.versions() if save_fit is not None else {}  # read before fitting: the fit saw at least these
        routes = fit_routes(store, parsed, names, emb, tasks)
        if save_fit is not None:
            save_fits(save_fit, routes, emb, FitSource(store.uri, versions, list(tasks) if tasks else None))
    return ServePlan(routes, upstreams, emb, store.uri, family, flush_s, str(cache_dir()))


def start(plan: ServePlan, port: int = 8000, host: str = "127.0.0.1", address: str | None = None, replicas: int = 1) -> str:
    """Deploy ``plan`` on ``replicas`` replicas (replacing a running app of the same name); returns
    the base URL. A replica routes on one Python thread: on a machine with cores to spare, more
    replicas serve more requests at once (each writes its own traffic; the metrics add them up)."""
    from ray import serve

    from harness.ray_runtime import ensure_ray
    from harness.serving.app import APP_NAME, RouterApp, StatsCollector

    ensure_ray(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(RouterApp.options(num_replicas=replicas).bind(plan, StatsCollector.bind()), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def stop() -> None:
    """Delete the app (its replicas write their queued traffic first)."""
    from ray import serve

    from harness.serving.app import APP_NAME

    serve.delete(APP_NAME)


def read_status(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """A running app's counters and percentiles over its replicas (``/v1/routerbench/status``)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/v1/routerbench/status", timeout=timeout_s) as reply:
            return json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"cannot read the status of {url}: {exc} (is `routerbench serve` running there?)") from None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.1f}"


def status_table(snap: dict[str, Any]) -> Table:
    """The snapshot as the table ``serve --status`` prints."""
    table = Table(title=f"routerbench serve ({snap['replicas']} replica{'s' if snap['replicas'] != 1 else ''})")
    for col in ("metric", "value"):
        table.add_column(col)
    for model, n in sorted(snap["requests"].items()):
        table.add_row(f"requests {model}", f"{n}  (${snap['cost_usd'].get(model, 0.0):.6f})")
    per = snap.get("cost_per_request_usd")
    table.add_row("cost per request", "-" if per is None else f"${per:.6f}")
    for key, label in (("overhead_s", "routing overhead ms"), ("upstream_s", "upstream latency ms"), ("handler_s", "time in the app ms")):
        q = snap[key]
        table.add_row(label, f"p50 {_ms(q['p50'])}  p95 {_ms(q['p95'])}  p99 {_ms(q['p99'])}")
    for kind, n in sorted(snap["errors"].items()):
        table.add_row(f"errors {kind}", str(n))
    t = snap.get("traffic") or {}
    if t:
        table.add_row("traffic rows", f"{t['written']} written, {t['pending']} pending, {t['dropped']} dropped, {t['failed_appends']} failed appends")
        if t.get("last_error"):
            table.add_row("last store error", t["last_error"])
    return table
