"""The chunk loop shared by API workers and vLLM replicas, on real Ray actors (one is killed)."""

from __future__ import annotations

import os

import ray

from harness.generation.actor_pool import run_chunks
from harness.generation.base import Request, Result


@ray.remote(num_cpus=0, max_restarts=0)
class Echo:
    def run(self, chunk: list[Request]) -> list[Result]:
        if any(r.sample_id == "die" for r in chunk):
            os._exit(1)  # the process dies mid-call, as a crashed engine would
        return [Result(r.sample_id, "echo", response=r.messages[0]["content"]) for r in chunk]


def test_every_request_ends_exactly_once_even_when_an_actor_dies(ray_local) -> None:
    ids = [f"s{i}" for i in range(11)] + ["die"] + [f"t{i}" for i in range(6)]
    batch = [Request.from_prompt(i, f"prompt {i}") for i in ids]
    # one actor per chunk so the others' chunks stay on live actors (a dead actor fails every later call too)
    actors = [Echo.remote() for _ in range(6)]
    out = [r for chunk in run_chunks(actors, batch, size=3, window=2, model="echo") for r in chunk]
    assert sorted(r.sample_id for r in out) == sorted(ids)
    failed = {r.sample_id for r in out if not r.ok}
    assert failed == {"s9", "s10", "die"}  # the dying actor's chunk, recorded with its kind
    assert {r.error for r in out if not r.ok} == {"engine"}
    assert all(r.response == f"prompt {r.sample_id}" for r in out if r.ok)
