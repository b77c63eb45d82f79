"""Forwarding a routed request to the chosen model: the same code path as ``extend``.

Each deployed model gets one :class:`~harness.generation.api.ApiCaller` in the serving replica,
built from its model config: the provider's :class:`~harness.generation.api.Protocol` (official
SDK), the shared named rate limiter of its key and model (the very actor ``extend`` uses, so
serving and an ``extend`` run on the same key share requests/min, tokens/min and the spend cap)
seen through a :class:`~harness.generation.lease.LeasingLimiter` (grants fetched ahead, settles
batched: no actor round trip on most requests' path), and the config's retry policy. A request comes back as a :class:`~harness.generation.base.Result`,
answered or failed with its error kind, never as an exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from harness.components import engine_class
from harness.errors import UserError
from harness.generation.api import ApiCaller, ApiEngine, Secret, StreamEvent, api_key
from harness.generation.base import Request, Result
from harness.generation.lease import LeasingLimiter
from harness.generation.limiter import get_limiter, limiter_name
from harness.model_config import ModelConfig


def check_servable(config: ModelConfig) -> None:
    """Serving forwards through API engines; a self-hosted engine is reached through its server."""
    cls = engine_class(config.provider)
    if not issubclass(cls, ApiEngine):
        raise UserError(
            f"{config.source or config.name}: provider '{config.provider}' runs in-process; serve forwards to API models — "
            "run its OpenAI-compatible server (vLLM's, llama.cpp's) and point a provider: openai_compatible config at it"
        )


@dataclass
class Upstream:
    """One model's caller, built on first use inside the replica's event loop."""

    config: ModelConfig
    key: Secret
    _caller: ApiCaller | None = field(default=None, repr=False)

    @classmethod
    def of(cls, config: ModelConfig) -> Upstream:
        """Read the key where the command runs (the replica may lack the variable)."""
        check_servable(config)
        return cls(config, api_key(config))

    def caller(self) -> ApiCaller:
        if self._caller is None:
            c = self.config
            limiter = LeasingLimiter(get_limiter(limiter_name(c.provider, c.base_url, self.key.reveal(), c.model), c.limits))
            self._caller = ApiCaller(c, engine_class(c.provider).protocol, limiter, self.key)
        return self._caller

    async def answer(self, request: Request) -> Result:
        return await self.caller().answer(request)

    def stream(self, request: Request) -> AsyncIterator[StreamEvent]:
        return self.caller().stream(request)

    def __getstate__(self) -> dict:
        return {"config": self.config, "key": self.key, "_caller": None}
