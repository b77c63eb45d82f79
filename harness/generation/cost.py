"""What an answer cost.

API models: the config's list prices times the usage the provider reported
(``input_tokens × input_per_mtok + output_tokens × output_per_mtok) / 1e6 + per_request``).

Self-hosted models (vLLM, llama.cpp) are paid by the hour, not by the token. Their cost is
device time: ``price.gpu_hour / 3600 × devices × wall-clock seconds`` while the engine works on a
batch, where ``devices = max(resources.gpus, 1) × resources.replicas`` (a CPU-only engine counts
its host as one device, so ``gpu_hour`` is then the host's hourly price). The seconds are split
over the results as they arrive: the time since the previous arrival goes to the results that
arrived then, in proportion to their tokens (input + output). The costs of a run therefore add up
to exactly its device time; start-up (loading the model) is not charged.
"""

from __future__ import annotations

import time

from harness.generation.base import Result
from harness.model_config import ModelConfig, Price


def token_cost(price: Price, input_tokens: int | None, output_tokens: int | None) -> float | None:
    """List-price cost of one call; ``None`` when the engine reported no usage."""
    if input_tokens is None or output_tokens is None:
        return None
    return price.cost(input_tokens, output_tokens)


def devices(config: ModelConfig) -> float:
    return max(config.resources.gpus, 1) * config.resources.replicas


class DeviceClock:
    """Charges device time to results as they arrive (see the module docstring)."""

    def __init__(self, config: ModelConfig, clock=time.perf_counter) -> None:
        self.usd_per_s = config.price.gpu_hour / 3600.0 * devices(config)
        self.clock = clock
        self.last = clock()

    def charge(self, results: list[Result]) -> list[Result]:
        now = self.clock()
        elapsed, self.last = now - self.last, now
        if not results:
            return results
        weights = [(r.input_tokens or 0) + (r.output_tokens or 0) for r in results]
        total = sum(weights)
        for r, w in zip(results, weights):
            share = w / total if total else 1.0 / len(results)
            r.cost_usd = self.usd_per_s * elapsed * share
        return results
