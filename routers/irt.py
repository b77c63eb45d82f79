"""Multidimensional item response theory (IRT-Router): P(correct) = σ(aₚ · θₘ − bₚ).

Each model has an ability vector θₘ; each prompt a discrimination vector aₚ = softplus(A x + a₀)
and a difficulty bₚ = wᵀx + c, both read from its embedding so unseen prompts get them. The
softplus keeps discriminations positive as in MIRT (EduCDM's, which IRT-Router builds on): a model
at least as able as another on every dimension is predicted at least as good on every prompt, and
the shared difficulty lets easy and hard prompts move every model together. Trained with binary
cross-entropy on the observed outcomes only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from routers._torch import TorchRouter
from routers.registry import ROUTERS


class _MIRT(nn.Module):
    def __init__(self, d: int, m: int, dims: int, prior: torch.Tensor) -> None:
        super().__init__()
        self.discrimination = nn.Linear(d, dims)
        self.difficulty = nn.Linear(d, 1)
        self.ability = nn.Parameter(torch.randn(m, dims) / dims**0.5)
        with torch.no_grad():  # start at the pool's mean rate: difficulty = −logit(mean)
            self.difficulty.bias.fill_(-float(prior.mean()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.discrimination(x)) @ self.ability.T - self.difficulty(x)


@ROUTERS.register("irt")
class IRTRouter(TorchRouter):
    name = "irt"
    seed_offset = 2003

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"dims": d} for d in (4, 16)]

    def network(self, d: int, m: int, prior: torch.Tensor) -> nn.Module:
        return _MIRT(d, m, int(self.params.get("dims", 4)), prior)
