"""What operators read: requests per model, routing overhead, upstream latency, cost, errors — over
every replica of the app.

Each replica records into its own :class:`ServeStats` (counters, and the timings of the requests
since its last report; nothing computed per request) and sends a :class:`StatsReport` every
``REPORT_S`` seconds to the app's one :class:`StatsHub` (a Serve deployment beside the routing
one, :mod:`harness.serving.app`). A report carries the replica's counters as running totals, so a
lost report never loses a request, and only the timings that are new; each report is numbered, so
a late or repeated one is ignored. The hub
keeps each replica's last totals (a replica that stopped still counts what it served) and the
last ``WINDOW`` timings of the whole app, and answers one snapshot: the sums and the percentiles
over that window. ``/metrics`` renders it in Prometheus' text format (counters and summaries with
p50/p95/p99); ``routerbench serve --status`` reads the same numbers as JSON from
``/v1/routerbench/status`` and prints a table. The replica that answers sends its own report
first, so its requests are all in; another replica's are at most ``REPORT_S`` late.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WINDOW = 10_000
QUANTILES = (0.5, 0.95, 0.99)
REPORT_S = 1.0  # how often a replica sends its report to the hub
TIMINGS = ("overhead_s", "upstream_s", "handler_s")  # embedding + routing; the upstream call; a request's whole time in the app
TRAFFIC_COUNTS = ("written", "pending", "dropped", "failed_appends")


@dataclass(frozen=True)
class StatsReport:
    """One replica's running totals and the timings recorded since its previous report."""

    replica: str
    requests: dict[str, int]  # per model used
    errors: dict[str, int]  # per kind (unknown_model, bad_request, upstream kinds)
    cost_usd: dict[str, float]  # per model
    timings: dict[str, list[float]]  # per name in TIMINGS: new samples only
    traffic: dict[str, Any]  # the traffic writer's stats (harness.serving.traffic.WriterStats)
    seq: int  # the replica's reports, numbered from 1
    sent_at: float = field(default_factory=time.time)


@dataclass
class ServeStats:
    """A replica's recorder: counters and the timings not reported yet."""

    replica: str = "0"
    requests: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    cost_usd: Counter = field(default_factory=Counter)
    timings: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in TIMINGS})
    reports: int = 0

    def served(self, model: str, overhead_s: float, upstream_s: float | None, cost: float | None, handler_s: float) -> None:
        self.requests[model] += 1
        self.timings["overhead_s"].append(overhead_s)
        self.timings["handler_s"].append(handler_s)
        if upstream_s is not None:
            self.timings["upstream_s"].append(upstream_s)
        if cost is not None:
            self.cost_usd[model] += cost

    def failed(self, kind: str) -> None:
        self.errors[kind] += 1

    def report(self, traffic: dict[str, Any] | None = None) -> StatsReport:
        """The totals so far and the timings since the last report (handed over, not copied)."""
        new, self.timings = self.timings, {name: [] for name in TIMINGS}
        self.reports += 1
        return StatsReport(self.replica, dict(self.requests), dict(self.errors), dict(self.cost_usd), new, dict(traffic or {}), self.reports)


def _quantiles(values: deque) -> dict[str, float | None]:
    if not values:
        return {f"p{round(q * 100)}": None for q in QUANTILES}
    qs = np.quantile(np.fromiter(values, dtype=float, count=len(values)), QUANTILES)
    return {f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)}


class StatsHub:
    """The app's numbers, from every replica's reports."""

    def __init__(self, window: int = WINDOW) -> None:
        self.last: dict[str, StatsReport] = {}  # each replica's latest report
        self.windows = {name: deque(maxlen=window) for name in TIMINGS}

    def absorb(self, report: StatsReport) -> None:
        seen = self.last.get(report.replica)
        if seen is not None and report.seq <= seen.seq:
            return
        self.last[report.replica] = report
        for name in TIMINGS:
            self.windows[name].extend(report.timings.get(name, ()))

    def snapshot(self) -> dict[str, Any]:
        reports = list(self.last.values())

        def total(kind: str) -> dict[str, float]:
            out: Counter = Counter()
            for r in reports:
                out.update(getattr(r, kind))
            return dict(sorted(out.items()))

        requests, cost = total("requests"), total("cost_usd")
        n = sum(requests.values())
        traffic: dict[str, Any] = {}
        if any(r.traffic for r in reports):
            traffic = {k: sum(int(r.traffic.get(k) or 0) for r in reports) for k in TRAFFIC_COUNTS}
            errors = [r for r in sorted(reports, key=lambda r: r.sent_at) if r.traffic.get("last_error")]
            traffic["last_error"] = errors[-1].traffic["last_error"] if errors else None
        return {
            "replicas": len(reports),
            "requests": requests,
            "errors": total("errors"),
            "cost_usd": cost,
            "cost_per_request_usd": sum(cost.values()) / n if n else None,
            **{name: _quantiles(self.windows[name]) for name in TIMINGS},
            "traffic": traffic,
        }


def prometheus_text(snap: dict[str, Any]) -> str:
    """The snapshot in Prometheus' exposition format."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        for labels, value in samples:
            text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    metric("routerbench_replicas", "gauge", "Replicas that have reported", [({}, snap["replicas"])])
    metric("routerbench_requests_total", "counter", "Requests answered, per model used", [({"model": m}, v) for m, v in snap["requests"].items()])
    metric("routerbench_errors_total", "counter", "Requests failed, per kind", [({"kind": k}, v) for k, v in snap["errors"].items()])
    metric("routerbench_cost_usd_total", "counter", "Upstream cost in USD, per model", [({"model": m}, v) for m, v in snap["cost_usd"].items()])
    for name, key, help_text in (("routerbench_routing_overhead_seconds", "overhead_s", "Embedding + routing time"), ("routerbench_upstream_latency_seconds", "upstream_s", "Upstream call time"), ("routerbench_request_seconds", "handler_s", "Time in the app per answered request")):
        samples = [({"quantile": str(int(q[1:]) / 100)}, v) for q, v in snap[key].items() if v is not None]
        metric(name, "summary", help_text, samples)
    t = snap.get("traffic") or {}
    if t:
        metric("routerbench_traffic_rows", "gauge", "Traffic rows written / pending / dropped, failed store appends", [({"state": k}, t[k]) for k in TRAFFIC_COUNTS])
    return "\n".join(lines) + "\n"
