"""Harness overhead on a real model: the llama_cpp engine (Ray worker actors, shared limiter,
retries, cost accounting) against a bare ``openai`` client loop at the same concurrency, both
on the same llama.cpp server with the Gemma 3 270M GGUF, same prompts, greedy, same max_tokens.

Rounds alternate which side goes first (bare then harness, harness then bare, …) after one
warm-up call each, so drift in the machine's load hits both alike; throughput is answered requests
per second over all rounds (the median of the per-round ratios is printed too). Both must return
the same answers (greedy decoding), checked before any number is printed.

Last line: ``ratio=<harness/bare>`` (≥ 0.9 wanted).

    python bench/bench_engine.py [--n 16] [--rounds 2] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from harness.generation import Request, build_engine  # noqa: E402
from harness.ray_runtime import ensure_ray  # noqa: E402
from harness.model_config import load_model_config  # noqa: E402

TOPICS = ["the moon", "rivers", "bread", "chess", "volcanoes", "bees", "glass", "trains", "tea", "maps", "rain", "salt", "clocks", "owls", "paper", "bridges"]


def requests(n: int, max_tokens: int, tag: str) -> list[Request]:
    return [Request(f"{tag}-{i}", [{"role": "user", "content": f"Write one sentence about {TOPICS[i % len(TOPICS)]}."}], max_tokens) for i in range(n)]


async def bare_loop(base_url: str, model: str, batch: list[Request], concurrency: int) -> list[str]:
    """What a user would write by hand: one AsyncOpenAI client, a semaphore, gather."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=300)
    slots = asyncio.Semaphore(concurrency)

    async def one(r: Request) -> str:
        async with slots:
            resp = await client.chat.completions.create(model=model, messages=r.messages, max_tokens=r.max_tokens, temperature=0.0)
            return resp.choices[0].message.content or ""

    try:
        return list(await asyncio.gather(*(one(r) for r in batch)))
    finally:
        await client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "model_configs" / "gemma3-270m-local.yaml"))
    ap.add_argument("--n", type=int, default=8, help="requests per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    config = load_model_config(args.config)
    concurrency = config.limits.max_concurrency
    ensure_ray()
    bare_s = harness_s = 0.0
    with build_engine(config) as engine:
        base_url = engine.base_url  # starts the server; the bare loop talks to the same one
        engine.generate(requests(1, args.max_tokens, "warm-harness"))
        asyncio.run(bare_loop(base_url, config.model, requests(1, args.max_tokens, "warm-bare"), concurrency))
        ratios = []
        for k in range(args.rounds):
            batch = requests(args.n, args.max_tokens, f"round{k}")
            timed: dict[str, float] = {}
            for side in (("bare", "harness") if k % 2 == 0 else ("harness", "bare")):
                t = time.perf_counter()
                if side == "bare":
                    bare = asyncio.run(bare_loop(base_url, config.model, batch, concurrency))
                else:
                    ours = engine.generate(batch)
                timed[side] = time.perf_counter() - t
            bare_s, harness_s = bare_s + timed["bare"], harness_s + timed["harness"]
            ratios.append(timed["bare"] / timed["harness"])
            failed = [r for r in ours if not r.ok]
            if failed:
                raise SystemExit(f"harness failed {len(failed)} requests, e.g. {failed[0].error}: {failed[0].error_detail}")
            differ = sum(a != r.response for a, r in zip(bare, ours))
            print(f"round {k}: bare {timed['bare']:.1f} s, harness {timed['harness']:.1f} s; {differ} of {args.n} answers differ")
            if differ:
                raise SystemExit("greedy answers differ between the bare loop and the harness")
    total = args.n * args.rounds
    bare_rps, harness_rps = total / bare_s, total / harness_s
    print(f"concurrency={concurrency} requests={total} max_tokens={args.max_tokens}")
    print(f"bare_req_s={bare_rps:.3f} harness_req_s={harness_rps:.3f} median_round_ratio={statistics.median(ratios):.3f}")
    print(f"ratio={harness_rps / bare_rps:.3f}")


if __name__ == "__main__":
    main()
