"""What routing costs a request: ``routerbench serve`` on a local Ray against calling the upstream
directly, with the same official ``openai`` client, the same prompts and the same concurrency.

Upstreams are our fault-injecting servers on 127.0.0.1 with no faults, answering after a fixed
``--upstream-ms`` (an LLM takes time to answer; 0 measures against an instant one). The app serves
``knn:k=5@lambda=1000``, fitted on a planted two-topic store built here, and forwards through the
engines (shared limiter, retries) and writes every request to the store's traffic family. Rounds
alternate which side goes first, after a warm-up of each, so drift in the machine's load hits both
alike; every prompt is distinct (no cache can help). Latency is per request, as the client sees it.

Last line: ``overhead_p50_ms=<ms> overhead_p99_ms=<ms> throughput_ratio=<routed/direct>``
(targets on 2 cores: p50 ≤ 15 ms, p99 ≤ 50 ms, ratio ≥ 0.8).

    python bench/bench_serve.py [--n 200] [--rounds 2] [--concurrency 4] [--upstream-ms 50] [--replicas 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import openai  # noqa: E402
import pandas as pd  # noqa: E402

from harness.generation.testing import FaultPlan, FaultServer  # noqa: E402
from harness.generation.testing.configs import write_fault_config  # noqa: E402
from harness.store import Store  # noqa: E402

SETTING = "knn:k=5@lambda=1000"
TOPICS = {
    "cook": ["How long should I boil {} pasta?", "What spices go well with roasted {}?", "Give me a recipe for {} soup.", "How do I bake bread with {} flour?"],
    "stars": ["How far away is the {} galaxy?", "Why does the planet {} have rings?", "What is the orbit of the comet {}?", "How bright is the star {} in the night sky?"],
}
WORDS = ["red", "green", "tiny", "big", "old", "new", "wild", "calm", "dark", "bright"]


def planted_store(uri: Path) -> None:
    rows = [(f"{t}-{i}-{j}", t, tpl.format(w)) for t, tpls in TOPICS.items() for i, tpl in enumerate(tpls) for j, w in enumerate(WORDS)]
    prompts = pd.DataFrame(rows, columns=["sample_id", "task", "prompt"]).assign(task_family="planted")
    good = {"model-a": "cook", "model-b": "stars"}
    outcomes = pd.concat([pd.DataFrame({"sample_id": prompts.sample_id, "model": m, "score": (prompts.task == t).astype(float), "cost_usd": 0.001}) for m, t in good.items()])
    Store(uri).append(prompts, outcomes)


def config_file(tmp: Path, name: str, server: FaultServer, concurrency: int) -> Path:
    return write_fault_config(tmp, server.url, name, limits={"timeout_s": 10.0, "max_concurrency": 4 * concurrency}, sampling={"max_tokens": 16})


def prompts(n: int, tag: str) -> list[str]:
    """Distinct questions from both topics."""
    templates = [t for tpls in TOPICS.values() for t in tpls]
    return [templates[i % len(templates)].format(f"{tag}{i}") for i in range(n)]


async def drive(base_url: str, model: str, texts: list[str], concurrency: int) -> tuple[float, np.ndarray]:
    """Wall seconds and per-request latencies (s) of ``texts`` at ``concurrency``."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=60)
    slots = asyncio.Semaphore(concurrency)

    async def one(text: str) -> float:
        async with slots:
            t = time.perf_counter()
            answer = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], max_tokens=16)
            assert answer.choices[0].message.content
            return time.perf_counter() - t

    try:
        start = time.perf_counter()
        latencies = await asyncio.gather(*(one(t) for t in texts))
        return time.perf_counter() - start, np.array(latencies)
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="requests per side per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--upstream-ms", type=float, default=50.0, help="how long each upstream takes to answer")
    ap.add_argument("--port", type=int, default=18000)
    ap.add_argument("--replicas", type=int, default=2, help="app replicas (one Python thread each: 2 on 2 cores)")
    args = ap.parse_args()

    from ray import serve

    from harness.ray_runtime import ensure_ray
    from harness.serving.server import build_plan, read_status, start, stop

    delay = args.upstream_ms / 1000
    servers = {m: FaultServer(FaultPlan(delay_s=(delay, delay))).start() for m in ("model-a", "model-b")}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp_dir:
        tmp = Path(tmp_dir)
        planted_store(tmp / "store")
        paths = [config_file(tmp, m, s, args.concurrency) for m, s in servers.items()]
        plan = build_plan(str(tmp / "store"), [SETTING], paths)
        ensure_ray()
        url = start(plan, port=args.port, replicas=args.replicas)
        try:
            sides = {"direct": (servers["model-a"].url, "fault-model"), "routed": (f"{url}/v1", SETTING)}
            for side, (base, model) in sides.items():  # warm-up: connections, the embedder, the limiter
                asyncio.run(drive(base, model, prompts(2 * args.concurrency, f"warm-{side}-"), args.concurrency))
            wall = {s: 0.0 for s in sides}
            latencies: dict[str, list[np.ndarray]] = {s: [] for s in sides}
            for k in range(args.rounds):
                order = list(sides) if k % 2 == 0 else list(reversed(sides))
                for side in order:
                    base, model = sides[side]
                    seconds, lat = asyncio.run(drive(base, model, prompts(args.n, f"r{k}-{side}-"), args.concurrency))
                    wall[side] += seconds
                    latencies[side].append(lat)
                print(f"round {k}: " + ", ".join(f"{s} {args.n / wall[s] * (k + 1):.1f} req/s" for s in sides))
            status = read_status(url)
            stop()
            written = Store(tmp / "store").prompts(families=["traffic"])
        finally:
            serve.shutdown()
            for s in servers.values():
                s.stop()
    total = args.n * args.rounds
    rps = {s: total / wall[s] for s in sides}
    p = {s: np.percentile(np.concatenate(latencies[s]) * 1000, [50, 99]) for s in sides}
    print(f"concurrency={args.concurrency} requests={total} per side upstream_ms={args.upstream_ms:g} replicas={args.replicas} traffic_rows={len(written)} routed_to={status['requests']} (all {status['replicas']} replicas)")
    print(f"direct_req_s={rps['direct']:.1f} routed_req_s={rps['routed']:.1f} direct_p50_ms={p['direct'][0]:.1f} direct_p99_ms={p['direct'][1]:.1f} routed_p50_ms={p['routed'][0]:.1f} routed_p99_ms={p['routed'][1]:.1f}")
    q = {k: status[k] for k in ("overhead_s", "upstream_s", "handler_s")}
    print("inside the app (p50/p99 ms): " + ", ".join(f"{k.removesuffix('_s')} {1000 * v['p50']:.1f}/{1000 * v['p99']:.1f}" for k, v in q.items()))
    print(f"overhead_p50_ms={p['routed'][0] - p['direct'][0]:.1f} overhead_p99_ms={p['routed'][1] - p['direct'][1]:.1f} throughput_ratio={rps['routed'] / rps['direct']:.3f}")


if __name__ == "__main__":
    main()
