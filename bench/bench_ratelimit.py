"""The shared rate limiter against our fault server: sustained rate, and nothing lost or doubled.

The fault server enforces 600 requests/min and 60k tokens/min (429 + retry-after beyond them) and
injects 5 % 500s and 1 % hangs past the client's timeout. The harness (2 Ray worker actors sharing
one limiter actor, with the same limits) sends ``rpm × duration / 60`` requests. Measured:

* the sustained rate: attempts the server accepted per minute in the middle of the run (the
  first and last ``--edge`` seconds are left out: the initial burst and the stragglers), as a
  percent of the limit that binds (requests or tokens);
* lost: requests without exactly one result, plus answers the server never served;
* duplicated: requests the server answered more than once.

Last line: ``rate=<percent of the limit> lost=<n> duplicated=<n>``.

    python bench/bench_ratelimit.py [--rpm 600] [--tpm 60000] [--duration 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.generation import Request, build_engine  # noqa: E402
from harness.ray_runtime import ensure_ray  # noqa: E402
from harness.generation.testing import FaultPlan, FaultServer  # noqa: E402
from harness.model_config import ModelConfig  # noqa: E402

WORDS = "route each prompt to the cheapest model that answers it well enough for the task at hand".split()


def prompt(i: int) -> str:
    return f"question {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12 + i % 9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpm", type=float, default=600)
    ap.add_argument("--tpm", type=float, default=60_000)
    ap.add_argument("--duration", type=float, default=40, help="seconds of traffic at the limit")
    ap.add_argument("--edge", type=float, default=5, help="seconds left out at each end of the measurement")
    ap.add_argument("--error-rate", type=float, default=0.05)
    ap.add_argument("--timeout-rate", type=float, default=0.01)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

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
    n = int(args.rpm * args.duration / 60)
    requests = [Request(f"req-{i}", [{"role": "user", "content": prompt(i)}]) for i in range(n)]
    ensure_ray()
    with FaultServer(plan) as server:
        config = ModelConfig(
            name="fault-server",
            provider="openai_compatible",
            model="fault-model",
            base_url=server.url,
            price={"input_per_mtok": 1.0, "output_per_mtok": 2.0},
            limits={"requests_per_min": args.rpm, "tokens_per_min": args.tpm, "max_concurrency": 32, "timeout_s": 1.0, "max_retries": 6, "backoff_s": 0.05, "max_backoff_s": 1.0},
            sampling={"max_tokens": 40},
            resources={"replicas": args.workers},
        )
        with build_engine(config) as engine:
            engine.start()
            start = time.monotonic()
            results = list(engine.stream(requests))
            wall = time.monotonic() - start
            stats = engine.limiter_stats()
        ledger = server.ledger

    # ---- rate over the middle of the run, from the server's own clock
    counted = sorted(ledger.counted_times())
    t0, t1 = counted[0] + args.edge, counted[-1] - args.edge
    inside = [t for t in counted if t0 <= t <= t1]
    per_min = len(inside) / (t1 - t0) * 60 if t1 > t0 else 0.0
    tokens_per_request = stats.tokens_used / max(stats.granted, 1)
    binding = min(args.rpm, args.tpm / tokens_per_request)
    rate_pct = 100.0 * per_min / binding

    # ---- lost and duplicated, from the results and the server's ledger
    by_id = Counter(r.sample_id for r in results)
    served = ledger.served()
    lost = sum(1 for r in requests if by_id[r.sample_id] != 1) + sum(1 for r in results if r.ok and served[r.sample_id] == 0)
    duplicated = sum(1 for sid, k in served.items() if k > 1)
    outcomes = ledger.counts()
    errors = Counter(r.error for r in results if not r.ok)

    print(f"requests={n} wall_s={wall:.1f} attempts={sum(outcomes.values())} server_outcomes={dict(outcomes)}")
    print(f"failed_results={dict(errors)} retries={sum(r.attempts for r in results) - n} 429s={outcomes.get('429', 0)}")
    print(f"limiter: granted={stats.granted} max_in_flight={stats.max_in_flight} tokens/request={tokens_per_request:.1f} waited_s={stats.waited_s:.1f}")
    print(f"sustained {per_min:.1f} accepted attempts/min over {t1 - t0:.1f} s; binding limit {binding:.1f}/min ({'requests' if binding == args.rpm else 'tokens'})")
    print(f"rate={rate_pct:.1f} lost={lost} duplicated={duplicated}")


if __name__ == "__main__":
    main()
