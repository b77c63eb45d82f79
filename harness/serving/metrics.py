"""What operators read: requests per model, routing overhead, upstream latency, cost, errors.

A replica keeps its own counters and the last ``WINDOW`` timings (percentiles over a sliding
window, computed when asked, never per request). ``/metrics`` renders them in Prometheus' text
format (counters, and summaries with p50/p95/p99), labelled with the replica; ``routerbench serve
--status`` reads the same numbers as JSON from ``/v1/routerbench/status`` and prints a table.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WINDOW = 10_000
QUANTILES = (0.5, 0.95, 0.99)


@dataclass
class ServeStats:
    replica: str = "0"
    requests: Counter = field(default_factory=Counter)  # per model used
    errors: Counter = field(default_factory=Counter)  # per kind (unknown_model, bad_request, upstream kinds)
    cost_usd: Counter = field(default_factory=Counter)  # per model
    overhead_s: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # embedding + routing
    upstream_s: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    handler_s: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # a request's whole time in the app

    def served(self, model: str, overhead_s: float, upstream_s: float | None, cost: float | None, handler_s: float) -> None:
        self.requests[model] += 1
        self.overhead_s.append(overhead_s)
        self.handler_s.append(handler_s)
        if upstream_s is not None:
            self.upstream_s.append(upstream_s)
        if cost is not None:
            self.cost_usd[model] += cost

    def failed(self, kind: str) -> None:
        self.errors[kind] += 1

    @staticmethod
    def _quantiles(values: deque) -> dict[str, float | None]:
        if not values:
            return {f"p{round(q * 100)}": None for q in QUANTILES}
        qs = np.quantile(np.fromiter(values, dtype=float, count=len(values)), QUANTILES)
        return {f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)}

    def snapshot(self, writer: dict[str, Any] | None = None) -> dict[str, Any]:
        total = sum(self.requests.values())
        return {
            "replica": self.replica,
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "cost_usd": dict(self.cost_usd),
            "cost_per_request_usd": (sum(self.cost_usd.values()) / total) if total else None,
            "overhead_s": self._quantiles(self.overhead_s),
            "upstream_s": self._quantiles(self.upstream_s),
            "handler_s": self._quantiles(self.handler_s),
            "traffic": writer or {},
        }


def prometheus_text(snap: dict[str, Any]) -> str:
    """The snapshot in Prometheus' exposition format."""
    rep = snap["replica"]
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        for labels, value in samples:
            text = ",".join(f'{k}="{v}"' for k, v in {"replica": rep, **labels}.items())
            lines.append(f"{name}{{{text}}} {value}")

    metric("routerbench_requests_total", "counter", "Requests answered, per model used", [({"model": m}, v) for m, v in sorted(snap["requests"].items())])
    metric("routerbench_errors_total", "counter", "Requests failed, per kind", [({"kind": k}, v) for k, v in sorted(snap["errors"].items())])
    metric("routerbench_cost_usd_total", "counter", "Upstream cost in USD, per model", [({"model": m}, v) for m, v in sorted(snap["cost_usd"].items())])
    for name, key, help_text in (("routerbench_routing_overhead_seconds", "overhead_s", "Embedding + routing time"), ("routerbench_upstream_latency_seconds", "upstream_s", "Upstream call time"), ("routerbench_request_seconds", "handler_s", "Time in the app per answered request")):
        samples = [({"quantile": str(int(q[1:]) / 100)}, v) for q, v in snap[key].items() if v is not None]
        metric(name, "summary", help_text, samples)
    t = snap.get("traffic") or {}
    if t:
        metric("routerbench_traffic_rows", "gauge", "Traffic rows written / pending / dropped, failed store appends", [({"state": k}, t[k]) for k in ("written", "pending", "dropped", "failed_appends")])
    return "\n".join(lines) + "\n"
