"""Matrix factorisation (RouteLLM's and EmbedLLM's form): quality = σ(vₘ · W x + bₘ).

The prompt's latent vector is a learned linear projection ``W x`` of its embedding (so unseen test
prompts have one), each model has a vector ``vₘ`` and a bias ``bₘ``; trained with binary
cross-entropy on the observed outcomes only (fractional scores are soft labels). With ``dim`` below
the pool size the (prompts × models) logit matrix is constrained to low rank; at or above it the
factored weight decay still acts as a nuclear-norm penalty, sharing strength across models — what
per-model regressors (svm, mlp) lack when a model answered few prompts.
"""

from __future__ import annotations

import torch
from torch import nn

from routers._torch import TorchRouter
from routers.registry import ROUTERS


class _Factorisation(nn.Module):
    def __init__(self, d: int, m: int, dim: int, prior: torch.Tensor) -> None:
        super().__init__()
        self.project = nn.Linear(d, dim, bias=False)
        self.models = nn.Parameter(torch.randn(m, dim) / dim**0.5)
        self.bias = nn.Parameter(prior.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x) @ self.models.T + self.bias


@ROUTERS.register("mf")
class MFRouter(TorchRouter):
    name = "mf"
    seed_offset = 1009

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"dim": d} for d in (8, 64)]

    def network(self, d: int, m: int, prior: torch.Tensor) -> nn.Module:
        return _Factorisation(d, m, int(self.params.get("dim", 8)), prior)
