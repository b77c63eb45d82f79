"""The latent-factor routers (mf, irt, dual-encoder) on synthetic matrices whose truth is known.

Planted structure: the true probability that model m answers prompt x is a low-rank logistic
function of x; outcomes are Bernoulli draws of it and 30 % of the training entries are hidden.
A router that learns the structure predicts the true probabilities far better than kNN, both on
the hidden entries of training prompts and on unseen prompts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.evaluate import route_folds
from harness.matrix import OutcomeMatrix
from harness.splits import Fold
from routers import RoutingOptions, build_routers
from routers.dual_encoder import DualEncoderRouter, sample_llm_contrastive
from routers.irt import IRTRouter
from routers.knn import KNNRouter
from routers.mf import MFRouter
from tests.matrices import toy_matrix

LATENT = {"mf": MFRouter, "irt": IRTRouter, "dual-encoder": DualEncoderRouter}
#: Small settings, so each fit takes well under a second here.
SMALL = {"mf": {"dim": 4}, "irt": {"dims": 4}, "dual-encoder": {"dim": 16, "tau": 0.1, "hidden": 32}}


def matrix(scores: np.ndarray, features: np.ndarray, costs: np.ndarray | None = None) -> OutcomeMatrix:
    n, m = scores.shape
    if costs is None:
        costs = np.tile(np.linspace(0.001, 0.01, m), (n, 1))
    return toy_matrix(scores, np.where(np.isnan(scores), np.nan, costs), features)


def planted(n: int, seed: int, d: int = 24, m: int = 8, rank: int = 3, form: str = "mf") -> tuple[np.ndarray, np.ndarray]:
    """Features x ~ N(0, I) and true probabilities: σ(vₘ·Wx + bₘ) (``mf``) or the MIRT form
    σ(softplus(Ax)·θₘ − wᵀx) (``irt``), rank ``rank``; the same planted parameters for every ``n``."""
    params = np.random.default_rng(1234)
    w = params.normal(size=(d, rank)) * 1.5 / np.sqrt(d)
    v, b = params.normal(size=(m, rank)), params.normal(0, 0.5, m)
    difficulty = params.normal(size=d) / np.sqrt(d)
    x = np.random.default_rng(seed).normal(size=(n, d))
    if form == "mf":
        logits = x @ w @ v.T + b
    else:
        logits = np.logaddexp(0, 2 * x @ w) @ v.T - 2 * (x @ difficulty)[:, None]
    return x, 1 / (1 + np.exp(-logits))


def outcomes(p: np.ndarray, seed: int, hide: float) -> tuple[np.ndarray, np.ndarray]:
    """Bernoulli outcomes of ``p`` with a random share ``hide`` set to NaN; also the hidden mask."""
    rng = np.random.default_rng(seed)
    y = (rng.random(p.shape) < p).astype(float)
    hidden = rng.random(p.shape) < hide
    return np.where(hidden, np.nan, y), hidden


def brier_to_truth(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean((predicted - truth) ** 2))


@pytest.mark.parametrize("name", ["mf", "irt"])
def test_recovers_planted_low_rank_quality_better_than_knn(name: str) -> None:
    x, p = planted(600, seed=0, form=name)
    y, hidden = outcomes(p, seed=1, hide=0.3)
    train = matrix(y, x)
    x_new, p_new = planted(300, seed=2, form=name)
    unseen = matrix(np.zeros_like(p_new), x_new)

    def errors(router) -> tuple[float, float]:
        router.fit(train)
        return brier_to_truth(router.predict(train)[hidden], p[hidden]), brier_to_truth(router.predict(unseen), p_new)

    knn = min((errors(KNNRouter(RoutingOptions(), k=k, metric="cosine")) for k in (5, 10, 40)), key=sum)
    latent = errors(LATENT[name](RoutingOptions(), **SMALL[name]))
    constant = brier_to_truth(np.nanmean(y, axis=0), p_new)  # each model's mean rate: knows no prompt
    print(f"{name}: hidden/unseen Brier to truth {latent[0]:.4f}/{latent[1]:.4f}, best knn {knn[0]:.4f}/{knn[1]:.4f}, constant {constant:.4f}")
    assert latent[0] < 0.6 * knn[0] and latent[1] < 0.6 * knn[1]
    assert latent[1] < 0.3 * constant


def two_clusters(n_per: int, seed: int, d: int = 16) -> tuple[OutcomeMatrix, np.ndarray]:
    """Cluster 1: model A (index 1) right 95 % of the time, B (index 2) 5 %; cluster 2 the other
    way round; the cheapest model (index 0) 50 % on both. 30 % of the outcomes are missing."""
    rng = np.random.default_rng(seed)
    centre = np.zeros((2, d))
    centre[0, 0] = centre[1, 1] = 3.0
    x = np.vstack([rng.normal(centre[0], 0.5, (n_per, d)), rng.normal(centre[1], 0.5, (n_per, d))])
    rate = np.vstack([np.tile([0.5, 0.95, 0.05], (n_per, 1)), np.tile([0.5, 0.05, 0.95], (n_per, 1))])
    y, _ = outcomes(rate, seed + 100, hide=0.3)
    return matrix(y, x, np.tile([0.001, 0.01, 0.01], (2 * n_per, 1))), rate


def test_dual_encoder_routes_each_cluster_to_its_model_with_calibrated_quality() -> None:
    train, _ = two_clusters(300, seed=0)
    test, rate = two_clusters(50, seed=10)
    router = DualEncoderRouter(RoutingOptions(lambdas=(1e-6, 1e4)), **DualEncoderRouter.grid()[1])
    router.fit(train)
    choice = router.route(test).choice
    assert (choice[0] == 0).all()  # quality worth nothing: the cheapest
    assert (choice[1, :50] == 1).mean() >= 0.9 and (choice[1, 50:] == 2).mean() >= 0.9
    q = router.predict(test)
    assert (q[:50, 1] > q[:50, 0]).mean() >= 0.9 and (q[:50, 0] > q[:50, 2]).mean() >= 0.9
    assert (q[50:, 2] > q[50:, 0]).mean() >= 0.9 and (q[50:, 0] > q[50:, 1]).mean() >= 0.9
    # calibrated enough for λ·q − c: each cluster's mean prediction near its true rate
    for rows in (slice(0, 50), slice(50, 100)):
        np.testing.assert_allclose(q[rows].mean(axis=0), rate[rows].mean(axis=0), atol=0.12)


def brute_force_contrastive(s: np.ndarray, target: np.ndarray, observed: np.ndarray) -> float:
    """RouterDC's sample-LLM loss, one prompt and positive at a time."""
    losses = []
    for i in range(len(s)):
        seen = np.flatnonzero(observed[i])
        if len(seen) == 0 or np.ptp(target[i, seen]) <= 1e-6:
            continue
        middle = (target[i, seen].max() + target[i, seen].min()) / 2
        neg = [j for j in seen if target[i, j] < middle]
        for j in (j for j in seen if target[i, j] >= middle):
            losses.append(-np.log(np.exp(s[i, j]) / (np.exp(s[i, j]) + np.exp(s[i, neg]).sum())))
    return float(np.mean(losses))


def test_contrastive_loss_is_the_per_prompt_definition() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(0, 3, (40, 5))
    target = rng.choice([0.0, 0.3, 1.0], (40, 5))
    target[:3] = 1.0  # prompts every model got right: no contrast
    observed = rng.random((40, 5)) < 0.7
    got = sample_llm_contrastive(torch.tensor(s), torch.tensor(target), torch.tensor(observed, dtype=torch.float64))
    assert float(got) == pytest.approx(brute_force_contrastive(s, target, observed), rel=1e-10)


@pytest.mark.parametrize("name", list(LATENT))
def test_fits_are_seeded_and_leave_torch_state_alone(name: str) -> None:
    x, p = planted(200, seed=3)
    train = matrix(outcomes(p, seed=4, hide=0.3)[0], x)

    def fitted(seed: int) -> np.ndarray:
        router = LATENT[name](RoutingOptions(seed=seed), **SMALL[name])
        router.fit(train)
        return router.predict(train)

    torch.set_num_threads(2)
    rng_state = torch.get_rng_state()
    first = fitted(0)
    assert torch.get_num_threads() == 2  # the one-thread guard restores the caller's setting
    assert torch.equal(torch.get_rng_state(), rng_state)  # seeding did not touch the global RNG
    np.testing.assert_array_equal(fitted(0), first)
    assert not np.array_equal(fitted(1), first)


@pytest.mark.parametrize("name", list(LATENT))
def test_builds_by_name_and_routes_folds_without_choosing_an_unknown_model(name: str) -> None:
    x, p = planted(160, seed=5, m=4)
    y = outcomes(p, seed=6, hide=0.3)[0]
    y[:, 3] = np.nan  # a model with no training outcome
    test_x, test_p = planted(40, seed=7, m=4)
    test = matrix((np.random.default_rng(8).random(test_p.shape) < test_p).astype(float), test_x)
    folds = [Fold(matrix(y[:80], x[:80]), test.take(np.arange(20))), Fold(matrix(y[80:], x[80:]), test.take(np.arange(20, 40)))]
    routers = build_routers(name, RoutingOptions(lambdas=(1.0, 1e4)))
    assert [r.params for r in routers] == LATENT[name].grid() and len(routers) <= 3
    for router in routers:
        assert router.handles_missing and router.needs_features
        routing = route_folds(router, folds)
        assert routing.choice.shape == (2, 40) and not (routing.choice == 3).any()
        assert np.isnan(router.predict(test)[:, 3]).all()
        assert np.isfinite(router.predict(test)[:, :3]).all()
