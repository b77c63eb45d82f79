"""The shared rate limiter against our fault server: pacing, retries until success, adaptation.

Three measurements, one process, one local Ray (2 worker actors sharing one limiter actor):

1. pacing: the server enforces 600 requests/min and 60k tokens/min (429 + retry-after beyond
   them) and injects 5 % 500s and 1 % hangs past the client's timeout; the config claims the same
   limits. Sustained rate: attempts the server accepted per minute in the middle of the run (the
   first and last ``--edge`` seconds left out), as a percent of the limit that binds.
2. hostile: half of all attempts fail transiently (10 % 429s, half of them with retry-after, 15 %
   500s, 15 % malformed 200 bodies, 8 % dropped connections, 2 % hangs); every prompt must be
   answered, once. Its config claims 60k requests/min: 429s that come whatever the load still
   slow the shared limiter (it cannot tell them apart), towards a rate that grows with the claim.
3. adaptive: the server allows ``--real-rpm`` (240) requests/min while the config claims
   ``--claimed-rpm`` (600): the shared limiter must learn the real limit from the 429s. Sustained
   successes per minute after ``--warmup`` seconds, as a percent of the real limit, and 429s as a
   percent of all attempts (the whole run).

In each, lost = requests without exactly one result plus answers the server never served;
duplicated = requests the server answered more than once. Last line::

    rate=<% of configured> lost=<n> duplicated=<n> hostile_answered=<n>/<N> adaptive=<% of server limit> rejected=<% of attempts>

    python bench/bench_ratelimit.py [--rpm 600] [--tpm 60000] [--duration 40] [--hostile 150] [--adaptive-s 60]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.generation import Request, Result, build_engine  # noqa: E402
from harness.generation.limiter import LimiterStats  # noqa: E402
from harness.generation.testing import FaultPlan, FaultServer  # noqa: E402
from harness.generation.testing.fault_server import Ledger  # noqa: E402
from harness.model_config import ModelConfig  # noqa: E402
from harness.ray_runtime import ensure_ray  # noqa: E402

WORDS = "route each prompt to the cheapest model that answers it well enough for the task at hand".split()


def prompt(i: int) -> str:
    return f"question {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12 + i % 9))


def run(plan: FaultPlan, requests: list[Request], workers: int, **limits: object) -> tuple[list[Result], Ledger, LimiterStats, float]:
    """One engine against one fresh fault server: its results, the server's ledger, the limiter."""
    with FaultServer(plan) as server:
        config = ModelConfig(
            name="fault-server",
            provider="openai_compatible",
            model="fault-model",
            base_url=server.url,
            price={"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            limits={"max_concurrency": 32, "timeout_s": 1.0, "backoff_s": 0.05, "max_backoff_s": 1.0, **limits},
            sampling={"max_tokens": 40},
            resources={"replicas": workers},
        )
        with build_engine(config) as engine:
            engine.start()
            start = time.monotonic()
            results = list(engine.stream(requests))
            wall = time.monotonic() - start
            stats = engine.limiter_stats()
    return results, server.ledger, stats, wall


def lost_and_duplicated(requests: list[Request], results: list[Result], ledger: Ledger) -> tuple[int, int]:
    by_id = Counter(r.sample_id for r in results)
    served = ledger.served()
    lost = sum(1 for r in requests if by_id[r.sample_id] != 1) + sum(1 for r in results if r.ok and served[r.sample_id] == 0)
    return lost, sum(1 for k in served.values() if k > 1)


def batch(n: int, tag: str) -> list[Request]:
    return [Request(f"{tag}-{i}", [{"role": "user", "content": prompt(i)}]) for i in range(n)]


def ok_times(ledger: Ledger) -> list[float]:
    with ledger.lock:
        return sorted(a.at for a in ledger.attempts if a.outcome == "ok")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpm", type=float, default=600)
    ap.add_argument("--tpm", type=float, default=60_000)
    ap.add_argument("--duration", type=float, default=40, help="seconds of traffic at the limit (measurement 1)")
    ap.add_argument("--edge", type=float, default=5, help="seconds left out at each end of measurement 1")
    ap.add_argument("--error-rate", type=float, default=0.05)
    ap.add_argument("--timeout-rate", type=float, default=0.01)
    ap.add_argument("--hostile", type=int, default=150, help="prompts of measurement 2")
    ap.add_argument("--hostile-rpm", type=float, default=60_000, help="the limit the config claims in measurement 2 (a high-tier key)")
    ap.add_argument("--real-rpm", type=float, default=240, help="the limit the server enforces in measurement 3")
    ap.add_argument("--claimed-rpm", type=float, default=600, help="the limit the config claims in measurement 3")
    ap.add_argument("--adaptive-s", type=float, default=60, help="seconds of traffic at the real limit (measurement 3)")
    ap.add_argument("--warmup", type=float, default=10, help="seconds of measurement 3 left out at the start")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ensure_ray()
    lost = duplicated = 0

    # ---- 1. pacing at the configured limits
    plan = FaultPlan(
        requests_per_min=args.rpm,
        tokens_per_min=args.tpm,
        error_rate=args.error_rate,
        timeout_rate=args.timeout_rate,
        hang_s=2.0,
        delay_s=(0.005, 0.05),
        completion_tokens=40,
        seed=args.seed,
    )
    requests = batch(int(args.rpm * args.duration / 60), "req")
    results, ledger, stats, wall = run(plan, requests, args.workers, requests_per_min=args.rpm, tokens_per_min=args.tpm)
    counted = sorted(ledger.counted_times())
    t0, t1 = counted[0] + args.edge, counted[-1] - args.edge
    inside = [t for t in counted if t0 <= t <= t1]
    per_min = len(inside) / (t1 - t0) * 60 if t1 > t0 else 0.0
    tokens_per_request = stats.tokens_used / max(stats.granted, 1)
    binding = min(args.rpm, args.tpm / tokens_per_request)
    rate_pct = 100.0 * per_min / binding
    n_lost, n_dup = lost_and_duplicated(requests, results, ledger)
    lost, duplicated = lost + n_lost, duplicated + n_dup
    outcomes = ledger.counts()
    errors = Counter(r.error for r in results if not r.ok)
    print(f"[pacing] requests={len(requests)} wall_s={wall:.1f} attempts={sum(outcomes.values())} server_outcomes={dict(outcomes)}")
    print(f"[pacing] failed_results={dict(errors)} retries={sum(r.attempts for r in results) - len(requests)} 429s={outcomes.get('429', 0)} lost={n_lost} duplicated={n_dup}")
    print(f"[pacing] limiter: granted={stats.granted} max_in_flight={stats.max_in_flight} tokens/request={tokens_per_request:.1f} waited_s={stats.waited_s:.1f}")
    print(f"[pacing] sustained {per_min:.1f} accepted attempts/min over {t1 - t0:.1f} s; binding limit {binding:.1f}/min ({'requests' if binding == args.rpm else 'tokens'})")

    # ---- 2. half of all attempts failing transiently; retries until the deadline
    plan = FaultPlan(
        throttle_rate=0.05,
        bare_throttle_rate=0.05,
        throttle_retry_after_s=0.2,
        error_rate=0.15,
        malformed_rate=0.15,
        drop_rate=0.08,
        timeout_rate=0.02,
        hang_s=1.0,
        delay_s=(0.005, 0.02),
        seed=args.seed + 1,
    )
    requests = batch(args.hostile, "hostile")
    results, ledger, stats, wall = run(plan, requests, args.workers, requests_per_min=args.hostile_rpm, timeout_s=0.5)
    n_lost, n_dup = lost_and_duplicated(requests, results, ledger)
    lost, duplicated = lost + n_lost, duplicated + n_dup
    answered = sum(1 for r in results if r.ok)
    outcomes = ledger.counts()
    attempts = sum(outcomes.values())
    print(f"[hostile] requests={len(requests)} wall_s={wall:.1f} attempts={attempts} failed_attempts={100 * (1 - outcomes['ok'] / attempts):.0f}% server_outcomes={dict(outcomes)}")
    print(
        f"[hostile] answered={answered}/{len(requests)} failed_results={dict(Counter(r.error for r in results if not r.ok))} "
        f"max_attempts={max(r.attempts for r in results)} lost={n_lost} duplicated={n_dup} limiter: rate_cuts={stats.rate_cuts} requests/min now={stats.requests_per_min or 0:.0f}"
    )

    # ---- 3. a server stricter than the config claims: the limiter must learn its limit
    plan = FaultPlan(requests_per_min=args.real_rpm, delay_s=(0.005, 0.05), seed=args.seed + 2)
    requests = batch(int(args.real_rpm * args.adaptive_s / 60), "adaptive")
    results, ledger, stats, wall = run(plan, requests, args.workers, requests_per_min=args.claimed_rpm, max_concurrency=8, timeout_s=5.0)
    n_lost, n_dup = lost_and_duplicated(requests, results, ledger)
    lost, duplicated = lost + n_lost, duplicated + n_dup
    oks = ok_times(ledger)
    w0, w1 = oks[0] + args.warmup, oks[-1] - 2.0  # the last seconds: stragglers, no longer saturated
    sustained = sum(1 for t in oks if w0 <= t <= w1) / (w1 - w0) * 60 if w1 > w0 else 0.0
    adaptive_pct = 100.0 * sustained / args.real_rpm
    outcomes = ledger.counts()
    rejected_pct = 100.0 * outcomes.get("429", 0) / max(sum(outcomes.values()), 1)
    print(f"[adaptive] requests={len(requests)} wall_s={wall:.1f} server_outcomes={dict(outcomes)} lost={n_lost} duplicated={n_dup}")
    print(
        f"[adaptive] config claims {args.claimed_rpm:.0f}/min, server allows {args.real_rpm:.0f}/min: sustained {sustained:.1f} successes/min over {w1 - w0:.1f} s; "
        f"limiter: 429s reported={stats.throttled} rate_cuts={stats.rate_cuts} requests/min now={stats.requests_per_min or 0:.0f}"
    )
    print(
        f"rate={rate_pct:.1f} lost={lost} duplicated={duplicated} hostile_answered={answered}/{args.hostile} "
        f"adaptive={adaptive_pct:.1f} rejected={rejected_pct:.1f}"
    )


if __name__ == "__main__":
    main()
