"""Pipeline throughput against the bare engine, on the same prompts, in one process.

* bare: the model's engine answers the rendered prompts (``engine.generate``), nothing else;
* pipeline: ``routerbench extend`` on a fresh store holding those prompts — Ray Data generate
  stage, grading stage, atomic appends to the store.

Both start their engine (for the local model: a llama.cpp server) inside the timing. Rounds
alternate which side goes first; the ratio is the median of the per-round ratios. Last line:
``ratio=<pipeline/bare>`` (prompts per second, pipeline over bare).

    python bench/bench_pipeline.py [--model model_configs/gemma3-270m-local.yaml] [--n 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.store import Store  # noqa: E402
from harness.generation.base import Request, build_engine  # noqa: E402
from harness.model_config import load_model_config  # noqa: E402
from harness.extend import ExtendSpec, extend, plan  # noqa: E402
from harness.ray_runtime import ensure_ray  # noqa: E402
from harness.tasks.prompt_import import import_prompts  # noqa: E402


def fresh_store(source: Path, family: str) -> Store:
    store = Store(Path(tempfile.mkdtemp(prefix="bench-pipeline-")) / "store")
    import_prompts(store, family, source)
    return store


def run_bare(config, requests: list[Request]) -> float:
    t = time.perf_counter()
    with build_engine(config) as engine:
        results = engine.generate(requests)
    elapsed = time.perf_counter() - t
    assert len(results) == len(requests)
    return elapsed


def run_pipeline(config, source: Path, family: str, spec: ExtendSpec) -> tuple[float, int]:
    store = fresh_store(source, family)
    t = time.perf_counter()
    report = extend(store, config, spec)
    return time.perf_counter() - t, report.appended


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "model_configs" / "gemma3-270m-local.yaml"))
    ap.add_argument("--family", default="grade-school-math")
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"))
    ap.add_argument("--n", type=int, default=40, help="prompts per run")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    config = load_model_config(args.model)
    source = Path(args.source)
    spec = ExtendSpec(families=(args.family,), limit=args.n)
    work, _ = plan(fresh_store(source, args.family), config, spec)
    requests = [Request(s, json.loads(m)) for s, m in zip(work["sample_id"], work["messages"])]
    ensure_ray()
    run_bare(config, requests[:2])  # warm the OS page cache for the model file and Ray's workers

    ratios = []
    for r in range(args.rounds):
        if r % 2 == 0:
            bare = run_bare(config, requests)
            pipe, appended = run_pipeline(config, source, args.family, spec)
        else:
            pipe, appended = run_pipeline(config, source, args.family, spec)
            bare = run_bare(config, requests)
        assert appended == len(requests), f"pipeline appended {appended} of {len(requests)}"
        ratios.append(bare / pipe)
        print(f"round {r}: bare {len(requests) / bare:.3f} prompts/s ({bare:.1f} s), pipeline {len(requests) / pipe:.3f} prompts/s ({pipe:.1f} s, graded and stored)")
    print(f"model={config.name} prompts={len(requests)} family={args.family}")
    print(f"ratio={statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
