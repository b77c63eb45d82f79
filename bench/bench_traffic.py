"""What a served request's traffic row costs the replica that writes it: ``TrafficWriter``'s append
of a batch with fresh keys (a blind Delta append, what it does) against the checked append every
other writer makes (stored keys read, absent ones merged in), side by side on one store.

The store starts with RouterBench's shape of prompts (``--prompts``, each with 11 outcomes), then
takes ``--batches`` traffic batches of ``--rows`` rows (what ``FLUSH_S`` gathers at ~40 requests/s),
alternating the two ways so both see the same store as it grows. CPU seconds of this process per
batch (the replica's cost: its thread holds the GIL while pyarrow and delta-rs plan), median over
the first and the last quarter of the batches.

Last line: ``fresh_ms=<ms> checked_ms=<ms> checked_over_fresh=<x> fresh_growth=<last/first quarter>``.

    python bench/bench_traffic.py [--prompts 3200] [--batches 120] [--rows 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.serving.traffic import TrafficRow, traffic_frames  # noqa: E402
from harness.store import Store  # noqa: E402

MODELS = [f"model-{i}" for i in range(11)]


def seed_store(root: Path, n: int) -> Store:
    ids = [f"bench-{i:06d}" for i in range(n)]
    prompts = pd.DataFrame({"sample_id": ids, "task": "bench", "task_family": "bench", "prompt": [f"question {i} " * 20 for i in range(n)]})
    rng = np.random.default_rng(0)
    outcomes = pd.concat([pd.DataFrame({"sample_id": ids, "model": m, "score": rng.random(n), "cost_usd": 1e-4, "response": "answer " * 40}) for m in MODELS])
    store = Store(root)
    store.append(prompts, outcomes, source="bench seed")
    return store


def batch(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    now = pd.Timestamp.now(tz="UTC")
    return traffic_frames(
        [TrafficRow(TrafficRow.new_id(), f"a served question {i}?", MODELS[i % 2], "knn:k=5@cost=0.001", "knn", "k=5", 1000.0, 0.8, 1e-4, "an answer " * 30, 12, 60, 1e-4, 0.4, "hash", None, now) for i in range(rows)],
        "traffic",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=3200)
    ap.add_argument("--batches", type=int, default=120, help="batches per way")
    ap.add_argument("--rows", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-traffic-") as tmp:
        store = seed_store(Path(tmp) / "store", args.prompts)
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for k in range(2 * args.batches):
            fresh = k % 2 == 0
            prompts, outcomes = batch(args.rows)
            t = time.process_time()
            Store(store.uri).append(prompts, outcomes, source="bench traffic", fresh_keys=fresh)  # a fresh object, as the writer's first batch
            cpu[fresh].append(1000 * (time.process_time() - t))
        total = len(Store(store.uri).prompts(["sample_id"], families=["traffic"]))
    assert total == 2 * args.batches * args.rows, total
    q = max(1, args.batches // 4)
    first = {f: statistics.median(v[:q]) for f, v in cpu.items()}
    last = {f: statistics.median(v[-q:]) for f, v in cpu.items()}
    for name, f in (("fresh (blind append)", True), ("checked (keys read, MERGE)", False)):
        print(f"{name:28} first quarter {first[f]:7.1f} ms  last quarter {last[f]:7.1f} ms CPU per batch of {args.rows}")
    print(f"traffic rows stored: {total:,} on {args.prompts:,} seeded prompts")
    print(f"fresh_ms={last[True]:.1f} checked_ms={last[False]:.1f} checked_over_fresh={last[False] / last[True]:.2f} fresh_growth={last[True] / first[True]:.2f}")


if __name__ == "__main__":
    main()
