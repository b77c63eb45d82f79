"""Every learned router of the registry on the shared RouterBench sample, and the embedder's two CPU backends.

Per router (its whole default grid, all three families, RouterBench's split): the seconds to fit
and route every λ, and the best setting's AIQ and ΔAIQ against the zero router (paired bootstrap
interval) per family. Then the embedding rate of the float (torch) and the fast (ONNX int8)
backend on the same prompts, measured side by side in this process.

Last line: ``slowest_router_s=<s> embed_speedup=<fast/float>`` (targets: every router < 60 s on
2 cores; embed_speedup ≥ 2).

    python bench/bench_routers.py [--data ../shared/data/routerbench] [--routers knn,mf,...] [--embed-prompts 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.store import Store  # noqa: E402
from harness.embeddings import DEFAULT_EMBED_TEXT, DEFAULT_EMBEDDER, attach_features, embedding_rates, prompt_texts  # noqa: E402
from harness.evaluate import EvalSpec, complete_folds, route_folds, summarise_family  # noqa: E402
from harness.outcome_import import load_sources  # noqa: E402
from harness.splits import routerbench_split  # noqa: E402
from routers import ROUTERS, RoutingOptions, build_routers  # noqa: E402
from harness.matrix import outcome_matrices  # noqa: E402

#: Routers that learn from the training prompts (the others are bounds and baselines).
LEARNED = ("knn", "knn-cv", "mlp", "svm", "mf", "irt", "sw-ranking", "dual-encoder", "carrot")


def bench_routers(store: Store, matrices: dict, names: list[str], bootstrap: int) -> dict[str, float]:
    """Fit + route seconds of each router's whole grid over every family, printing AIQ and ΔAIQ."""
    t = time.perf_counter()
    matrices = attach_features(store, matrices)
    print(f"embedded {sum(m.n for m in matrices.values())} prompts in {time.perf_counter() - t:.1f} s (default text, float backend)")

    options = RoutingOptions()
    spec = EvalSpec(bootstrap=bootstrap)
    folds = {f: complete_folds(routerbench_split(f, matrices))[0] for f in sorted(matrices)}
    llm = {f: route_folds(r, fs) for f, fs in folds.items() for r in build_routers("llm", options)}
    print(f"{'router':<14}{'settings':>9}{'fit+route s':>13}   " + "   ".join(f"{f:>30}" for f in folds))
    print(f"{'':<14}{'':>9}{'':>13}   " + "   ".join(f"{'AIQ  ΔAIQ [95%]':>30}" for _ in folds))
    seconds = {}
    for name in names:
        if name not in ROUTERS:
            print(f"{name:<14} not registered")
            continue
        cells, total = [], 0.0
        for family, fs in folds.items():
            routers = build_routers(name, options)
            t = time.perf_counter()
            routings = [route_folds(r, fs) for r in routers]
            total += time.perf_counter() - t
            _, aiq = summarise_family(family, fs[0].test, spec, llm[family], *routings)
            best = aiq[aiq["router"] == name].sort_values("aiq").iloc[-1]
            cells.append(f"{best.aiq:.4f} {best.d_aiq:+.4f} [{best.d_lo:+.3f},{best.d_hi:+.3f}]")
        seconds[name] = total
        print(f"{name:<14}{len(build_routers(name, options)):>9}{total:>13.2f}   " + "   ".join(f"{c:>30}" for c in cells))

    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "routerbench"))
    ap.add_argument("--routers", default=",".join(LEARNED))
    ap.add_argument("--embed-prompts", type=int, default=500, help="distinct prompts for the embedding rates")
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    store = Store(Path(tempfile.mkdtemp(prefix="bench-routers-")) / "store")
    batch = load_sources([args.data])
    store.append(batch.prompts, batch.outcomes)
    matrices = outcome_matrices(store, with_prompts=True)
    names = [n for n in args.routers.split(",") if n]  # --routers "" measures the embedding only
    seconds = bench_routers(store, matrices, names, args.bootstrap) if names else {}

    # What the default embeds (each family's distinct part), as many of each family as there are, shuffled:
    # distinct token sequences, so the model really runs on every one (encode embeds a sequence once).
    texts = np.unique(np.concatenate([prompt_texts(m, DEFAULT_EMBED_TEXT) for m in matrices.values()]))
    texts = np.random.default_rng(0).permutation(texts)[: args.embed_prompts]
    rates = embedding_rates(list(texts), DEFAULT_EMBEDDER)
    print(
        f"embedding {len(texts)} distinct prompts: float {rates['torch_per_s']:.1f} prompts/s, fast {rates['fast_per_s']:.1f} prompts/s, "
        f"cosine to float min {rates['cosine_min']:.4f} mean {rates['cosine_mean']:.4f}"
    )
    slowest = max(seconds, key=seconds.get) if seconds else None
    print(f"slowest router: {slowest} ({seconds.get(slowest, 0):.1f} s)")
    print(f"slowest_router_s={max(seconds.values(), default=0):.2f} embed_speedup={rates['speedup']:.2f}")


if __name__ == "__main__":
    main()
