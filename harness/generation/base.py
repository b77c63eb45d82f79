"""The engine contract: a batch of chat requests in, one result per request out.

Every engine (OpenAI-protocol and Anthropic clients, vLLM on Ray, llama.cpp) answers
:class:`Request` objects with :class:`Result` objects; a failed request is a result with an
``error`` kind, never an exception that loses the rest of the batch. Costs come from the model
config's prices and the token usage the engine reports (self-hosted engines: device time, see
:mod:`harness.generation.cost`).

Engines implement :meth:`Engine.stream` (results in completion order, for progress bars);
:meth:`Engine.generate` collects them in request order.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.errors import UserError
from harness.model_config import ModelConfig
from harness.components import engine_class

#: Error kinds recorded in ``Result.error`` (and the store's ``error`` column as ``engine:<kind>``).
ERROR_KINDS = (
    "rate_limited",  # 429 after the retries ran out
    "server_error",  # 5xx after the retries ran out
    "timeout",
    "connection",  # refused / reset / dropped
    "malformed",  # a body that is not the protocol's JSON
    "bad_request",  # 400 / 422: not retried
    "auth",  # 401 / 403: not retried
    "not_found",  # 404: not retried
    "spend_cap",  # the config's max_spend_usd was reached before this call
    "engine",  # anything else the engine raised
)
#: Kinds worth another attempt: the same request may succeed later.
RETRYABLE_KINDS = frozenset({"rate_limited", "server_error", "timeout", "connection", "malformed"})


@dataclass(frozen=True)
class Request:
    sample_id: str
    messages: list[dict[str, str]]  # OpenAI-style chat turns: {"role": ..., "content": ...}
    max_tokens: int | None = None  # overrides the config's sampling.max_tokens

    @classmethod
    def from_prompt(cls, sample_id: str, prompt: str, max_tokens: int | None = None) -> Request:
        """A store prompt as chat turns: plain text is one user turn; a JSON list of
        ``{"role", "content"}`` objects is taken as the conversation itself."""
        text = prompt.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                turns = json.loads(text)
            except ValueError:
                turns = None
            if isinstance(turns, list) and turns and all(isinstance(t, dict) and {"role", "content"} <= t.keys() for t in turns):
                return cls(sample_id, [{"role": str(t["role"]), "content": str(t["content"])} for t in turns], max_tokens)
            if isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns):
                raise UserError(
                    f"sample '{sample_id}': a multi-turn prompt (a list of user turns) needs one model answer per turn, "
                    "which `generate` does not run yet; give the conversation as a JSON list of {role, content} turns"
                )
        return cls(sample_id, [{"role": "user", "content": prompt}], max_tokens)


@dataclass
class Result:
    sample_id: str
    model: str  # the config's name (the store's model column)
    response: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None  # the answering call (the last attempt), not the time spent queued
    cost_usd: float | None = None
    error: str | None = None  # one of ERROR_KINDS, None on success
    error_detail: str | None = field(default=None, repr=False)
    attempts: int = 0  # calls made for this request (retries included)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failure(cls, request: Request, model: str, kind: str, detail: str, attempts: int = 0) -> Result:
        assert kind in ERROR_KINDS, kind
        return cls(request.sample_id, model, error=kind, error_detail=detail[:500], attempts=attempts)


def check_unique(requests: Iterable[Request]) -> list[Request]:
    """The batch as a list; a sample_id asked twice would make its results ambiguous."""
    batch, seen = list(requests), set()
    for r in batch:
        if r.sample_id in seen:
            raise UserError(f"sample_id '{r.sample_id}' appears twice in one batch; sample_ids must be unique")
        seen.add(r.sample_id)
    return batch


def custom_resources(config: ModelConfig) -> dict[str, Any]:
    """Ray options for the config's custom resources (``resources.custom``; none: no option)."""
    return {"resources": dict(config.resources.custom)} if config.resources.custom else {}


class Engine(ABC):
    """Answers requests for one model config. Use as a context manager (or call :meth:`close`)
    so that servers, actors and connections are released.

    A subclass registered in :data:`harness.components.ENGINES` declares what its provider needs in
    its class attributes; the pipeline, the config checks and cost accounting read them from here.
    """

    #: Runs on devices we pay for by the hour (cost = device time), not a provider's metered API.
    self_hosted: ClassVar[bool] = False
    #: The provider's own endpoint needs an API key (``api_key_env``) unless ``base_url`` points elsewhere.
    needs_key: ClassVar[bool] = False
    #: Only reachable at a ``base_url`` the config gives (a server of one's own).
    needs_base_url: ClassVar[bool] = False

    @classmethod
    def batch_size(cls, config: ModelConfig) -> int:
        """Prompts per generation batch: enough to keep every concurrent slot of every replica busy."""
        return max(8, 4 * config.limits.max_concurrency * config.resources.replicas)

    @classmethod
    def stage_resources(cls, config: ModelConfig) -> dict[str, float]:
        """Ray resources of the process that holds the engine (the pipeline's generate stage);
        engines that start actors of their own (vLLM replicas, API callers) reserve there instead.
        The config's custom resources (``resources.custom``) place the stage on the nodes that have them."""
        return {"num_cpus": 0, **custom_resources(config)}

    def __init__(self, config: ModelConfig) -> None:
        self.config = config

    @abstractmethod
    def stream(self, requests: Iterable[Request]) -> Iterator[Result]:
        """One result per request, in the order they complete."""

    def generate(self, requests: Iterable[Request]) -> list[Result]:
        """One result per request, in request order."""
        batch = check_unique(requests)
        by_id = {r.sample_id: r for r in self.stream(batch)}
        return [by_id[r.sample_id] for r in batch]

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing
        """Release servers, actors or connections."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def build_engine(config: ModelConfig) -> Engine:
    """The engine registered for the config's provider."""
    return engine_class(config.provider)(config)
