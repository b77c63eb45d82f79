"""RouterDC's dual contrastive idea on frozen sentence embeddings.

A trainable encoder (a one-hidden-layer MLP, or a linear map with ``hidden=0``; then L2
normalisation) maps the prompt embedding to a unit vector; each model has a learned unit vector;
their cosine similarity sₚₘ says how well the model suits the prompt. RouterDC's sample-LLM contrastive loss pulls each prompt towards the
models that scored well on it and away from those that did not: per prompt, positives are the
observed models in the upper half of its observed score range, negatives those in the lower half
(binary outcomes: right vs wrong), and each positive pays −log(e^{s⁺/τ} / (e^{s⁺/τ} + Σ e^{s⁻/τ})).
Prompts every model got equally right or wrong, and missing outcomes, take no part in it.
(RouterDC's sample-sample loss, which needs prompt clusters, is left out.)

Routing by ``λ·q − c`` needs a quality, not a similarity, so each model also has a logistic head
q = σ(αₘ sₚₘ + βₘ), αₘ > 0 (monotone in the similarity), trained *jointly* with a masked BCE:
the combined loss is ``contrast_weight`` × contrastive + BCE. A Platt fit after training would
calibrate on the very prompts the similarities were fitted to, whose similarities are
overconfident; the joint head is early-stopped (on the held-out prompts' BCE) together with the
encoder, and the BCE also teaches what the contrast ignores: prompts easy or hard for every model.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from routers._torch import TorchRouter, masked_bce
from routers.registry import ROUTERS

#: A logit that no similarity/τ reaches: masks the non-negatives out of the log-sum-exp (finite,
#: unlike −inf, so a prompt without negatives has a zero rather than a NaN gradient).
_FAR = -1e4


class _DualEncoder(nn.Module):
    def __init__(self, d: int, m: int, dim: int, hidden: int, prior: torch.Tensor) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, dim)) if hidden else nn.Linear(d, dim)
        self.models = nn.Parameter(torch.randn(m, dim))
        # αₘ = softplus(slope) starts at 5: a cosine in [−1, 1] moves the logit ±5 around the model's prior
        self.slope = nn.Parameter(torch.full((m,), math.log(math.expm1(5.0))))
        self.shift = nn.Parameter(prior.clone())

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x), dim=1) @ F.normalize(self.models, dim=1).T

    def head(self, similarity: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.slope) * similarity + self.shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.similarity(x))


def sample_llm_contrastive(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RouterDC's sample-LLM loss, averaged over (prompt, positive model) pairs; ``logits`` = s/τ."""
    observed = mask > 0
    top = torch.where(observed, target, torch.full_like(target, -1.0)).amax(dim=1, keepdim=True)
    bottom = torch.where(observed, target, torch.full_like(target, 2.0)).amin(dim=1, keepdim=True)
    middle = (top + bottom) / 2
    contrasted = top - bottom > 1e-6
    positive = observed & contrasted & (target >= middle)
    negative = observed & contrasted & (target < middle)
    negatives = torch.logsumexp(torch.where(negative, logits, torch.full_like(logits, _FAR)), dim=1, keepdim=True)
    pair = F.softplus(negatives - logits)  # −log(e^{s⁺} / (e^{s⁺} + Σ e^{s⁻}))
    return (pair * positive).sum() / positive.sum().clamp_min(1)


@ROUTERS.register("dual-encoder")
class DualEncoderRouter(TorchRouter):
    name = "dual-encoder"
    seed_offset = 3001
    # Measured at 3,000 × 384 × 11: the encoder fits best with a larger step and stops within
    # ~10-25 epochs; 200 epochs bound a fit that never stops early to ~12 s on one thread.
    defaults = {**TorchRouter.defaults, "lr": 0.01, "max_epochs": 200}

    @classmethod
    def grid(cls) -> list[dict]:
        return [{"dim": 32, "tau": t} for t in (0.1, 0.5)]

    def network(self, d: int, m: int, prior: torch.Tensor) -> nn.Module:
        return _DualEncoder(d, m, int(self.params.get("dim", 32)), int(self.params.get("hidden", 128)), prior)

    def loss(self, net: nn.Module, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        net = cast(_DualEncoder, net)
        similarity = net.similarity(x)
        contrast = sample_llm_contrastive(similarity / float(self.params.get("tau", 0.1)), target, mask)
        return float(self.params.get("contrast_weight", 1.0)) * contrast + masked_bce(net.head(similarity), target, mask)
