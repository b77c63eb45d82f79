"""Shared torch plumbing of the latent-factor routers (``mf``, ``irt``, ``dual-encoder``).

:class:`TorchRouter` fits a small network mapping a standardised prompt embedding to one logit per
model, on every *observed* outcome (a NaN score is left out of the loss, never read as a 0). It is
full-batch AdamW for a fixed number of epochs with early stopping on a held-out tenth of the
training *prompts* (all their outcomes): the router is tested on prompts it has never seen, so the
stopping point is chosen on unseen prompts rather than on hidden entries of seen ones.

Determinism: the network is initialised under a forked, seeded torch RNG (``options.seed`` plus a
per-router offset, so the global RNG is left alone); full-batch training draws nothing else; and
fit and predict run on one torch thread (:func:`one_torch_thread`), so a Ray worker and the driver
sum floats in the same order and give bit-identical numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.matrix import OutcomeMatrix
from routers.base import PredictiveRouter

#: Share of training prompts held out for early stopping, and the fewest prompts that makes a
#: held-out set worth having (below it every prompt trains, for ``max_epochs``).
VALIDATION_SHARE = 0.1
MIN_PROMPTS_FOR_VALIDATION = 50
#: Embeddings, targets and observed mask (1.0 where an outcome exists) of a set of prompts.
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the caller's setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the observed entries (``mask`` 1) only; fractional targets
    in [0, 1] are soft labels."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def validation_rows(observed: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask of the held-out prompts: a seeded tenth of those with an outcome, none when
    there are too few prompts to spare."""
    rows = np.flatnonzero(observed.any(axis=1))
    held = np.zeros(len(observed), dtype=bool)
    if len(rows) >= MIN_PROMPTS_FOR_VALIDATION:
        held[np.random.default_rng(seed).choice(rows, int(round(VALIDATION_SHARE * len(rows))), replace=False)] = True
    return held


class TorchRouter(PredictiveRouter):
    """A predictive router whose quality is ``σ(network(x))``, trained on the observed outcomes.

    Subclasses set ``seed_offset``, build the network in :meth:`network` and may replace the
    training objective in :meth:`loss` (by default the masked BCE of the network's logits).
    Parameters read from ``self.params``: ``lr``, ``weight_decay``, ``max_epochs``, ``patience``.
    """

    handles_missing = True
    #: Added to ``options.seed`` so that routers of one evaluation do not share an initial draw.
    seed_offset: ClassVar[int] = 0
    defaults: ClassVar[dict[str, Any]] = {"lr": 0.003, "weight_decay": 0.1, "max_epochs": 500, "patience": 30}

    def param(self, name: str) -> Any:
        return self.params.get(name, self.defaults[name])

    def network(self, d: int, m: int, prior: torch.Tensor) -> nn.Module:
        """The module mapping (n, d) standardised embeddings to (n, M) quality logits; ``prior``
        is each model's logit of its mean observed score (a starting bias)."""
        raise NotImplementedError

    def loss(self, net: nn.Module, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_bce(net(x), target, mask)

    @property
    def seed(self) -> int:
        return int(self.options.seed) + self.seed_offset

    def fit_features(self, x: np.ndarray, scores: np.ndarray) -> None:
        observed = ~np.isnan(scores)
        self.known = observed.any(axis=0)  # a model without outcomes gets NaN: never chosen
        self.mean = x.mean(axis=0)
        spread = x.std(axis=0)
        self.scale = np.where(spread > 1e-12, spread, 1.0)
        # Scores are qualities in [0, 1]; clipping keeps the soft-label BCE defined for stray values.
        target = np.where(observed, np.clip(scores, 0.0, 1.0), 0.0)
        held = validation_rows(observed, self.seed)
        rate = np.clip(target.sum(axis=0) / np.maximum(observed.sum(axis=0), 1), 0.02, 0.98)
        with one_torch_thread():
            xs = self._standardised(x)
            t = torch.from_numpy(target.astype(np.float32))
            mk = torch.from_numpy(observed.astype(np.float32))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                self.net = self.network(x.shape[1], scores.shape[1], torch.from_numpy(np.log(rate / (1 - rate)).astype(np.float32)))
            fit, val = torch.from_numpy(~held), torch.from_numpy(held)
            self.epochs = self._train((xs[fit], t[fit], mk[fit]), (xs[val], t[val], mk[val]) if held.any() else None)

    def _train(self, fit: Batch, val: Batch | None) -> int:
        """Full-batch AdamW on the ``fit`` rows; with ``val`` rows, stop once their BCE has not
        improved for ``patience`` epochs and keep the best parameters. Returns the epochs kept.

        Stopping watches the BCE of the predicted quality, the number routing uses, whatever the
        training objective (the dual encoder's adds a contrastive term)."""
        opt = torch.optim.AdamW(self.net.parameters(), lr=float(self.param("lr")), weight_decay=float(self.param("weight_decay")))
        best, best_epoch, best_state = float("inf"), 0, None
        max_epochs, patience = int(self.param("max_epochs")), int(self.param("patience"))
        for epoch in range(1, max_epochs + 1):
            opt.zero_grad()
            self.loss(self.net, *fit).backward()
            opt.step()
            if val is None:
                continue
            with torch.no_grad():
                current = float(masked_bce(self.net(val[0]), val[1], val[2]))
            if current < best:
                best, best_epoch, best_state = current, epoch, copy.deepcopy(self.net.state_dict())
            elif epoch - best_epoch >= patience:
                break
        if best_state is None:
            return max_epochs
        self.net.load_state_dict(best_state)
        return best_epoch

    def _standardised(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - self.mean) / self.scale).astype(np.float32))

    def predict(self, test: OutcomeMatrix) -> np.ndarray:
        with one_torch_thread(), torch.no_grad():
            logits = self.net(self._standardised(np.asarray(test.features, dtype=np.float64)))
            quality = torch.sigmoid(logits).numpy().astype(np.float64)
        return np.where(self.known, quality, np.nan)
