"""Spread a batch of requests over Ray actors in chunks, a bounded window in flight.

API workers and vLLM replicas both expose ``run(chunk) -> list[Result]``; this is the loop that
feeds them round-robin and hands back each chunk's results as soon as it completes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from harness.generation.base import Request, Result


def run_chunks(actors: list[Any], batch: list[Request], size: int, window: int, model: str) -> Iterator[list[Result]]:
    """Results a chunk at a time, in completion order. An actor that dies has its chunk recorded
    as failed outcomes (error kind ``engine``), never lost."""
    import ray

    chunks = iter([batch[i : i + size] for i in range(0, len(batch), size)])
    turn = itertools.cycle(actors)
    pending: dict[Any, list[Request]] = {}
    for chunk in itertools.islice(chunks, window):
        pending[next(turn).run.remote(chunk)] = chunk
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        chunk = pending.pop(ready[0])
        try:
            results = ray.get(ready[0])
        except ray.exceptions.RayError as exc:
            results = [Result.failure(r, model, "engine", f"actor failed: {type(exc).__name__}") for r in chunk]
        if (nxt := next(chunks, None)) is not None:
            pending[next(turn).run.remote(nxt)] = nxt
        yield results
