"""Router evaluation: RouterBench's original algorithm vs ours, side by side in one process.

On the shared RouterBench sample (arc-challenge, mbpp, winogrande; RouterBench's split), with the
same cached embeddings and the same per-token price cost term, both run the full grid: KNN
k ∈ {5, 10, 40}, MLP (100,) and (100, 100), SVM, 32 λ values, the cascade over 11 budgets × 8
judge error rates, single models, the oracle, hulls and AIQ (compat mode, which is RouterBench's).

* baseline (bench/routerbench_port.py): one estimator per model, re-prediction per λ, row-wise
  pandas lookups of the chosen model's cost, a Python loop over rows for the cascade, O(n³) hulls;
* ours: the harness's routers and metrics, in this process (no Ray, so no start-up cost counts).

It checks that both give identical decisions and points for the deterministic routers (KNN, MLP,
SVM, single models, oracle, cascade with ε = 0), with the options of ``evaluate --parity
routerbench`` (KNN neighbours within a tie as sklearn picks them, one float64 MLP per model), and
prints the speed-ups. Last line: ``speedup=<end-to-end> post_fit=<ratio> identical=<yes|no>``.

    python bench/bench_evaluate.py [--store DIR] [--data ../shared/data/routerbench] [--skip-cold-embed]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import routerbench_port as port  # noqa: E402
from harness.store import Store  # noqa: E402
from harness.embeddings import DEFAULT_EMBEDDER, attach_features, encode, model_inputs, prompt_texts  # noqa: E402
from harness.evaluate import EvalSpec, complete_folds, summarise_family  # noqa: E402
from harness.outcome_import import load_sources, to_wide  # noqa: E402
from harness.model_config import load_model_configs  # noqa: E402
from harness.splits import routerbench_split  # noqa: E402
from routers import RoutingOptions, build_routers  # noqa: E402
from routers.cascade import BUDGETS, ERROR_RATES  # noqa: E402
from harness.matrix import outcome_matrices  # noqa: E402

ROUTERBENCH_EMBED_S = 273.0  # RouterBench's own code embedding these prompts on this machine (issue 4)
DETERMINISTIC = ("knn", "svm", "mlp")


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def open_store(args) -> Store:
    if args.store:
        return Store(args.store)
    store = Store(Path(tempfile.mkdtemp(prefix="bench-evaluate-")) / "store")
    batch = load_sources([args.data])
    store.append(batch.prompts, batch.outcomes)
    return store


def measure_embedding(store: Store, matrices, skip_cold: bool) -> dict[str, float]:
    texts = np.concatenate([prompt_texts(matrices[f], "original") for f in sorted(matrices)])
    out = {"prompts": float(len(texts)), "inputs": float(len(model_inputs(list(texts), DEFAULT_EMBEDDER)[0]))}
    if not skip_cold:
        encode(texts[:8].tolist(), DEFAULT_EMBEDDER)  # load the model outside the timing
        _, out["cold_s"] = timed(encode, list(texts), DEFAULT_EMBEDDER)
    _, out["warm_s"] = timed(attach_features, store, matrices)  # computes what is missing, then reads the cache
    _, out["cached_s"] = timed(attach_features, store, matrices)
    return out


# ---------------------------------------------------------------------- baseline: RouterBench's algorithm
def run_baseline(wide_test: pd.DataFrame, wide_train: pd.DataFrame, models, embeddings, model_cost, lambdas):
    """Returns (fit seconds, post-fit seconds, choices per (router, config, λ), points frame)."""
    args = (wide_train, models, embeddings, model_cost)
    t = time.perf_counter()
    from sklearn.neural_network import MLPRegressor
    from sklearn.svm import LinearSVR

    routers = {f"knn|k={k}": port.PortKNNRouter(*args, n_neighbors=k) for k in (5, 10, 40)}
    for hidden in ((100,), (100, 100)):
        make = lambda h=hidden: MLPRegressor(hidden_layer_sizes=h, max_iter=200, random_state=1234, activation="relu", learning_rate="constant", learning_rate_init=0.001)  # noqa: E731
        routers[f"mlp|hidden={hidden}"] = port.PortPerModelRouter(*args, make_estimator=make)
    routers["svm|"] = port.PortPerModelRouter(*args, make_estimator=lambda: LinearSVR(random_state=1234))
    fit_s = time.perf_counter() - t

    t = time.perf_counter()
    results = {}
    for name, router in routers.items():
        for lam in lambdas:
            results[f"{name}|willingness_to_pay:{lam}"] = router.batch_route_prompts(wide_test["prompt"].values, willingness_to_pay=lam)
    aggregated = port.get_results_for_eval(wide_test, results, models)
    threshold = np.quantile(wide_test[models].values.flatten(), q=0.95)
    np.random.seed(42)
    np.random.shuffle(list(range(len(wide_test) + len(wide_train))))  # the RNG state the split leaves
    cascade = {}
    for budget in BUDGETS:
        for rate in ERROR_RATES:
            cascade[(rate, budget)] = port.run_cascading_router(wide_test.dropna(), models, model_cost, budget, rate, threshold)
    curves = []
    for name in routers:
        rows = aggregated[aggregated["model_name"].str.startswith(name + "|")]
        curves.append(rows[["total_cost", "performance"]].values)
    for rate in ERROR_RATES:
        curves.append(np.array([[cascade[(rate, b)][1], cascade[(rate, b)][0]] for b in BUDGETS]))
    singles = aggregated[aggregated["model_name"].isin(models)]
    curves.append(singles[["total_cost", "performance"]].values)  # the zero router
    aiqs = port.calc_aiq(curves)
    post_s = time.perf_counter() - t
    return fit_s, post_s, results, aggregated, cascade, aiqs


# ---------------------------------------------------------------------- ours
def run_ours(folds, options: RoutingOptions):
    routers = [r for name in ("llm", "oracle", "knn", "mlp", "svm", "cascade") for r in build_routers(name, options)]
    fold = folds[0]
    t = time.perf_counter()
    for r in routers:
        r.fit(r.training_rows(fold.train))
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    routings = [r.route(fold.test) for r in routers]
    points, aiq = summarise_family(fold.test.family, fold.test, EvalSpec(aiq_mode="compat", bootstrap=0), *routings)
    post_s = time.perf_counter() - t
    return fit_s, post_s, routings, points, aiq


def port_tag(router: str, config: str) -> str:
    """The baseline's name for one of our router settings."""
    params = dict(p.split("=") for p in config.split(","))
    if router == "knn":
        return f"knn|k={params['k']}"
    if router == "mlp":
        return f"mlp|hidden={tuple(int(h) for h in params['hidden'].split('x'))}"
    return "svm|"


def compare(family, test, routings, points, baseline_results, aggregated, cascade, lambdas) -> list[str]:
    """Differences between ours and the baseline for the deterministic routers (empty: identical)."""
    bad = []
    n = test.n
    models = np.asarray(test.models, dtype=object)
    for routing in routings:
        if routing.router in DETERMINISTIC:
            # one knn routing holds every k's λ sweep: decision i is (configs[i], lam[i])
            for i, (config, lam) in enumerate(zip(routing.configs, routing.lam)):
                tag = port_tag(routing.router, config)
                theirs = np.asarray(baseline_results[f"{tag}|willingness_to_pay:{lam}"], dtype=object)
                if not np.array_equal(models[routing.choice[i]], theirs):
                    bad.append(f"{family} {tag} λ={lam}: {int((models[routing.choice[i]] != theirs).sum())} different choices")
    agg = aggregated.set_index("model_name")
    for r in points[points["router"].isin(["llm", "oracle"])].itertuples():
        key = r.config if r.router == "llm" else "oracle"
        if not (np.isclose(agg.loc[key, "performance"], r.quality, rtol=0, atol=1e-12) and np.isclose(agg.loc[key, "total_cost"] / n, r.cost, rtol=1e-12)):
            bad.append(f"{family} {r.router} {r.config}: point differs")
    for r in points[(points["router"] == "cascade") & points["config"].str.startswith("error_rate=0,")].itertuples():
        budget = float(r.config.split("budget=")[1])
        perf, cost = cascade[(0, budget)]
        if not (np.isclose(perf, r.quality, rtol=0, atol=1e-12) and np.isclose(cost / n, r.cost, rtol=1e-12)):
            bad.append(f"{family} cascade {r.config}: point differs")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", help="a store with RouterBench outcomes imported (default: import --data into a temporary one)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "routerbench"))
    ap.add_argument("--skip-cold-embed", action="store_true", help="do not time embedding every prompt from scratch")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    store = open_store(args)
    matrices = outcome_matrices(store, with_prompts=True)
    emb = measure_embedding(store, matrices, args.skip_cold_embed)
    matrices = attach_features(store, matrices, embed_text="original")
    prices = {name: cfg.price.per_token for name, cfg in load_model_configs(ROOT / "model_configs").items()}
    # RouterBench's neighbours within ties and one MLP per model, as `evaluate --parity routerbench`
    options = RoutingOptions(cost_model="price", prices=prices, parity="routerbench")
    lambdas = list(options.lambdas)
    wide = to_wide(store).set_index("sample_id", drop=False)

    totals = {"base_fit": 0.0, "base_post": 0.0, "ours_fit": 0.0, "ours_post": 0.0}
    problems: list[str] = []
    print(f"{'family':<15}{'baseline fit':>14}{'post-fit':>10}{'ours fit':>10}{'post-fit':>10}   AIQ (compat) knn5 / svm / zero: baseline | ours")
    for family in sorted(matrices):
        folds, _ = complete_folds(routerbench_split(family, matrices))
        fold = folds[0]
        models = list(fold.test.models)
        embeddings = {}
        for m in (fold.train, fold.test):
            embeddings.update(zip(prompt_texts(m, "original"), np.asarray(m.features, dtype=np.float64)))
        wide_test = wide.loc[fold.test.sample_ids].reset_index(drop=True)
        wide_train = wide.loc[fold.train.sample_ids].reset_index(drop=True)
        wide_test["prompt"] = prompt_texts(fold.test, "original")
        wide_train["prompt"] = prompt_texts(fold.train, "original")
        model_cost = {m: prices[m] for m in models}

        b_fit, b_post, results, aggregated, cascade, b_aiq = run_baseline(wide_test, wide_train, models, embeddings, model_cost, lambdas)
        o_fit, o_post, routings, points, aiq = run_ours(folds, options)
        problems += compare(family, fold.test, routings, points, results, aggregated, cascade, lambdas)
        totals["base_fit"] += b_fit
        totals["base_post"] += b_post
        totals["ours_fit"] += o_fit
        totals["ours_post"] += o_post
        a = aiq.set_index(["router", "config"])["aiq"]
        ours_aiq = (a[("knn", "k=5,metric=cosine")], a[("svm", "kernel=linear")], a[("zero", "")])
        theirs_aiq = (b_aiq[0], b_aiq[5], b_aiq[-1])
        print(
            f"{family:<15}{b_fit:>13.2f}s{b_post:>9.2f}s{o_fit:>9.2f}s{o_post:>9.3f}s   "
            + " / ".join(f"{x:.4f}" for x in theirs_aiq) + " | " + " / ".join(f"{x:.4f}" for x in ours_aiq)
        )

    post = totals["base_post"] / totals["ours_post"]
    e2e = (totals["base_fit"] + totals["base_post"]) / (totals["ours_fit"] + totals["ours_post"])
    print(f"{'total':<15}{totals['base_fit']:>13.2f}s{totals['base_post']:>9.2f}s{totals['ours_fit']:>9.2f}s{totals['ours_post']:>9.3f}s")
    if "cold_s" in emb:
        print(
            f"embedding {int(emb['prompts'])} prompts ({int(emb['inputs'])} distinct token sequences after the model's 256-token cut): "
            f"{emb['cold_s']:.1f} s from scratch (batched, each sequence once), "
            f"{emb['cached_s']:.2f} s from the store's cache; RouterBench's code: {ROUTERBENCH_EMBED_S:.0f} s "
            f"({ROUTERBENCH_EMBED_S / emb['cold_s']:.1f}x cold, {ROUTERBENCH_EMBED_S / emb['cached_s']:.0f}x cached)"
        )
    else:
        print(f"embedding {int(emb['prompts'])} prompts: {emb['cached_s']:.2f} s from the store's cache")
    for p in problems[:20]:
        print("DIFFERENT:", p)
    print(f"speedup={e2e:.1f} post_fit={post:.0f} identical={'no' if problems else 'yes'}")


if __name__ == "__main__":
    main()
