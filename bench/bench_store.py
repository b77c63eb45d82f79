"""The outcome store on Delta Lake (``Store``) against the layout before it (``LegacyStore``), side by side.

Both layouts run in this process on the same seeded synthetic frames (RouterBench-shaped: 11
models, prompts of ~100 to ~4,500 characters, ~2,200 on average, stored twice as RouterBench's
prompt and prompt_original are; responses of up to ~1,000 (~400 on average)):

* append: 64 outcomes of new sample_ids for an existing model, the commit ``routerbench extend``
  makes every ``commit_every`` (64) rows: outcomes only, ``overwrite=True``, their prompts stored
  beforehand (untimed). Also timed, not in the last line: the same with ``overwrite=False`` (keys
  checked against the store) and with the 64 prompts in the same append. Stores of ~35k outcomes
  (3,200 prompts × 11 models) and ~400k (36,400 × 11), each built in 12 commits (all prompts, then
  one per model) and compacted before timing (legacy: one file per partition; Delta: ``data compact``'s
  rewrite of each fragmented partition, then vacuum with 0 h retention), so both start with one data file per partition. The new ids
  sort between the stored ones, as a task's new samples do. Every repeat opens a fresh store
  object (as each command does) and runs every size and layout once, in a rotating order; medians
  are kept. ``append_growth`` = Delta's median at ~400k /
  at ~35k.
* read: ``outcome_matrices(store)`` (score and cost matrices of every family) of the ~400k store,
  after the appends above (same number of new files in both layouts), fresh store object each
  repeat; ``read_ratio`` = Delta median / legacy median.
* import: what ``routerbench import`` does (``harness.cli._import``: ``load_sources`` of the shared
  RouterBench sample, then ``append``) into a fresh store of each layout; ``import_ratio`` =
  Delta median / legacy median (the append part alone is printed too).

Repeats alternate which layout goes first. Last line:
``append_growth=<x> read_ratio=<delta/old> import_ratio=<delta/old>``. Targets: append_growth ≤ 1.5,
read_ratio ≤ 1.2, import_ratio ≤ 1.5. Timings are wall clock: run it on an otherwise idle machine.

    python bench/bench_store.py [--small 3200] [--large 36400] [--repeat 7] [--read-repeat 5] [--import-repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.store import Store  # noqa: E402
from harness.legacy_store import LegacyStore  # noqa: E402
from harness.matrix import outcome_matrices  # noqa: E402

MODELS = [
    "WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2", "gpt-3.5-turbo-1106", "gpt-4-1106-preview",
    "meta/code-llama-instruct-34b-chat", "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat",
    "zero-one-ai/Yi-34B-Chat",
]
TASKS = [("mmlu-astronomy", "mmlu"), ("mmlu-virology", "mmlu"), ("hellaswag", "hellaswag"), ("gsm8k", "gsm8k"),
         ("mbpp", "mbpp"), ("arc-challenge", "arc-challenge"), ("winogrande", "winogrande"), ("mt-bench", "mtbench")]
WORDS = "the of a to in is that for it as with was on be by this are or from at an which have not but all were when we there can more if".split()
LAYOUTS = ("legacy", "delta")
APPEND_ROWS = 64
APPEND_MODEL = MODELS[5]
#: The 64-row appends timed: (prompts in the same append, overwrite). The first is the headline:
#: one commit of ``routerbench extend`` (commit_every=64, outcomes only, overwrite=True, its
#: prompts already stored; harness/extend.py).
VARIANTS = {
    "extend commit (overwrite)": (False, True),
    "append, keys checked": (False, False),
    "append with its prompts": (True, False),
}
HEADLINE = next(iter(VARIANTS))


class Synth:
    """Seeded RouterBench-shaped prompts and outcomes: text from pools, so making 400k rows is cheap."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        sent = [" ".join(self.rng.choice(WORDS, int(k))).capitalize() + "." for k in self.rng.integers(6, 30, 3000)]
        self.prompt_pool = [" ".join(self.rng.choice(sent, int(k))) for k in self.rng.integers(3, 60, 1500)]
        self.response_pool = [" ".join(self.rng.choice(sent, int(k))) for k in self.rng.integers(0, 12, 1500)]

    def prompts(self, ids: list[str]) -> pd.DataFrame:
        n = len(ids)
        task = self.rng.integers(0, len(TASKS), n)
        text = [self.prompt_pool[k] for k in self.rng.integers(0, len(self.prompt_pool), n)]
        return pd.DataFrame({
            "sample_id": ids,
            "task": [TASKS[t][0] for t in task],
            "task_family": [TASKS[t][1] for t in task],
            "prompt": text,
            "prompt_original": [str([t]) for t in text],
            "gold": [None] * n,
        })

    def outcomes(self, ids: list[str], model: str) -> pd.DataFrame:
        n = len(ids)
        return pd.DataFrame({
            "sample_id": ids,
            "model": model,
            "response": [str([self.response_pool[k]]) for k in self.rng.integers(0, len(self.response_pool), n)],
            "score": (self.rng.random(n) < 0.6).astype(float),
            "cost_usd": self.rng.uniform(1e-5, 3e-3, n),
            "cost_source": "published",
        })


def ids_of(start: int, n: int) -> list[str]:
    return [f"synth-{i:07d}" for i in range(start, start + n)]


def open_store(layout: str, path: Path):
    return LegacyStore(path) if layout == "legacy" else Store(path)


def compact(layout: str, path: Path) -> None:
    store = open_store(layout, path)
    if layout == "legacy":
        store.compact()
    else:
        store.compact(retain_hours=0)


def data_files(path: Path) -> int:
    """Parquet data files under the store (those no live commit lists are gone after compaction)."""
    return sum(1 for p in path.rglob("*.parquet") if "_delta_log" not in p.parts)


def build(layout: str, path: Path, synth_prompts: pd.DataFrame, synth_outcomes: list[pd.DataFrame]) -> float:
    """All prompts in one commit, then one commit per model, then compaction: seconds it took."""
    t = time.perf_counter()
    store = open_store(layout, path)
    store.append(synth_prompts, None, source="bench prompts")
    for frame in synth_outcomes:
        store.append(None, frame, source=f"bench {frame['model'].iat[0]}")
    compact(layout, path)
    return time.perf_counter() - t


def alternate(repeat: int, run) -> dict[str, list[float]]:
    """``run(layout, i)`` for both layouts, ``repeat`` times, alternating which goes first."""
    times: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    for i in range(repeat):
        for layout in LAYOUTS if i % 2 == 0 else LAYOUTS[::-1]:
            times[layout].append(run(layout, i))
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_ms(xs: list[float]) -> str:
    return f"{med(xs) * 1e3:9.1f} ms  (min {min(xs) * 1e3:7.1f}, max {max(xs) * 1e3:7.1f})"


def build_stores(tmp: Path, sizes: dict[str, int], synth: Synth) -> dict[tuple[str, str], Path]:
    """A store of each layout and size (prompts × 11 models), built from the same frames."""
    paths = {}
    for label, n_prompts in sizes.items():
        prompts = synth.prompts(ids_of(0, n_prompts))
        outcomes = [synth.outcomes(ids_of(0, n_prompts), m) for m in MODELS]
        for layout in LAYOUTS:
            paths[label, layout] = tmp / f"{label}-{layout}"
            secs = build(layout, paths[label, layout], prompts, outcomes)
            print(f"  built {label} {layout:6}: {n_prompts * len(MODELS):,} outcomes, {data_files(paths[label, layout])} data files after compaction, {secs:.1f} s")
    return paths


def bench_appends(paths: dict[tuple[str, str], Path], sizes: dict[str, int], synth: Synth, repeat: int) -> dict[str, dict[tuple[str, str], list[tuple[float, float]]]]:
    """(wall, CPU) seconds of 64-row appends per variant and (size, layout). Each repeat runs every
    size and layout once, in a rotating order, so a change in the machine's load hits all alike."""
    # The new ids of every repeat, the same frames for both layouts. They sort between stored ids
    # (as a task's new samples do), so no layout gets to skip files by the key's min/max alone.
    def new_ids(n_prompts: int, tag: str) -> list[str]:
        return [f"synth-{k:07d}~{tag}" for k in np.sort(synth.rng.choice(n_prompts, APPEND_ROWS, replace=False))]

    combos = list(paths)
    results: dict[str, dict[tuple[str, str], list[tuple[float, float]]]] = {}
    for vi, (variant, (prompts_in_append, overwrite)) in enumerate(VARIANTS.items()):
        times: dict[tuple[str, str], list[tuple[float, float]]] = {c: [] for c in combos}
        for r in range(repeat):
            frames = {}
            for label, n_prompts in sizes.items():
                ids = new_ids(n_prompts, f"{vi}.{r}")
                frames[label] = (synth.prompts(ids), synth.outcomes(ids, APPEND_MODEL))
            for label, layout in combos[r % len(combos):] + combos[: r % len(combos)]:
                p, o = frames[label]
                path = paths[label, layout]
                if not prompts_in_append:  # the prompts are in the store already (untimed), as extend finds them
                    open_store(layout, path).append(p, None, source="bench prompts")
                store = open_store(layout, path)
                wall, cpu = time.perf_counter(), time.process_time()
                res = store.append(p if prompts_in_append else None, o, overwrite=overwrite, source="bench append")
                times[label, layout].append((time.perf_counter() - wall, time.process_time() - cpu))
                assert res.outcomes_added == APPEND_ROWS and res.prompts_added == (APPEND_ROWS if prompts_in_append else 0), (layout, variant, res)
        results[variant] = times
    return results


def bench_read(paths: dict[str, Path], repeat: int) -> dict[str, list[float]]:
    shapes = {}

    def read(layout: str, i: int) -> float:
        store = open_store(layout, paths[layout])
        t = time.perf_counter()
        mats = outcome_matrices(store)
        elapsed = time.perf_counter() - t
        shapes[layout] = sorted((f, m.scores.shape, int(np.isfinite(m.scores).sum())) for f, m in mats.items())
        return elapsed

    times = alternate(repeat, read)
    assert shapes["legacy"] == shapes["delta"], "the two layouts read different matrices"
    cells = sum(n for _, _, n in shapes["delta"])
    print(f"  matrices: {len(shapes['delta'])} families, {cells:,} scored cells (same in both layouts)")
    return times


def bench_import(tmp: Path, data: Path, repeat: int) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """``routerbench import DATA`` (cli._import: load_sources + append) into a fresh store of each layout."""
    from harness import cli
    from harness.outcome_import import load_sources

    load_sources([str(data)])  # warm the page cache and imports: the first layout timed would pay for them
    appended: dict[str, list[float]] = {k: [] for k in LAYOUTS}
    added = {}

    def run(layout: str, i: int) -> float:
        path = tmp / f"import-{layout}-{i}"
        store = open_store(layout, path)
        calls = []
        original = store.append

        def append(*a, **kw):  # the append part alone, for the table
            t = time.perf_counter()
            res = original(*a, **kw)
            calls.append(time.perf_counter() - t)
            return res

        store.append = append  # type: ignore[method-assign]
        with contextlib.redirect_stdout(io.StringIO()):  # cli's console prints the import summary
            t = time.perf_counter()
            _, res = cli._import(store, [str(data)], on_ambiguous="skip", overwrite=False, refresh=False)
            elapsed = time.perf_counter() - t
        appended[layout].append(sum(calls))
        added[layout] = res.outcomes_added
        shutil.rmtree(path, ignore_errors=True)
        return elapsed

    times = alternate(repeat, run)
    assert added["legacy"] == added["delta"] > 0, added
    return times, appended, added["delta"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=3200, help="prompts of the small store (× 11 models)")
    ap.add_argument("--large", type=int, default=36400, help="prompts of the large store (× 11 models)")
    ap.add_argument("--repeat", type=int, default=7, help="64-row appends per store and layout")
    ap.add_argument("--read-repeat", type=int, default=5)
    ap.add_argument("--import-repeat", type=int, default=3)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "routerbench"))
    ap.add_argument("--quick", action="store_true", help="smoke run: 400 / 3,200 prompts, 3 repeats, one import")
    args = ap.parse_args()
    if args.quick:
        args.small, args.large, args.repeat, args.read_repeat, args.import_repeat = 400, 3200, 3, 1, 1
    data = Path(args.data)
    if not data.exists():
        raise SystemExit(f"shared RouterBench sample not found at {data} (--data)")

    start = time.perf_counter()
    synth = Synth(0)
    sizes = {"small": args.small, "large": args.large}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"append: {APPEND_ROWS} new sample_ids of {APPEND_MODEL}, median of {args.repeat}")
        paths = build_stores(tmp, sizes, synth)
        appends = bench_appends(paths, sizes, synth, args.repeat)
        print(f"read: outcome_matrices(store) of the large store, median of {args.read_repeat}")
        read = bench_read({layout: paths["large", layout] for layout in LAYOUTS}, args.read_repeat)
        for path in paths.values():  # free the disk before the import
            shutil.rmtree(path, ignore_errors=True)
        print(f"import: routerbench import {data}, median of {args.import_repeat}")
        imp, imp_append, imported = bench_import(tmp, data, args.import_repeat)

    n = {label: p * len(MODELS) for label, p in sizes.items()}

    def wall(variant: str, label: str) -> dict[str, list[float]]:
        return {layout: [w for w, _ in appends[variant][label, layout]] for layout in LAYOUTS}

    def cpu(variant: str, label: str, layout: str) -> float:
        return med([c for _, c in appends[variant][label, layout]])

    print()
    print(f"{'wall time':46} {'legacy (median)':>44}   {'delta (median)':>44}   delta/legacy")
    rows = [(f"{variant} @ {n[label]:,}", wall(variant, label)) for variant in VARIANTS for label in sizes]
    rows.append((f"matrices() @ {n['large']:,}", read))
    rows.append((f"import shared sample ({imported:,} outcomes)", imp))
    rows.append(("  of which append", imp_append))
    for name, t in rows:
        print(f"{name:46} {fmt_ms(t['legacy']):>44}   {fmt_ms(t['delta']):>44}   {med(t['delta']) / med(t['legacy']):8.2f}")
    print()
    for variant in VARIANTS:
        g = {k: med(wall(variant, "large")[k]) / med(wall(variant, "small")[k]) for k in LAYOUTS}
        c = {k: cpu(variant, "large", k) / cpu(variant, "small", k) for k in LAYOUTS}
        print(f"append growth {n['small']:,} -> {n['large']:,}, {variant:26}: delta {g['delta']:.2f}x, legacy {g['legacy']:.2f}x"
              f"   (CPU time: delta {c['delta']:.2f}x, legacy {c['legacy']:.2f}x)")
    print(f"total {time.perf_counter() - start:.0f} s")

    append_growth = med(wall(HEADLINE, "large")["delta"]) / med(wall(HEADLINE, "small")["delta"])
    read_ratio = med(read["delta"]) / med(read["legacy"])
    import_ratio = med(imp["delta"]) / med(imp["legacy"])
    print(f"append_growth={append_growth:.2f} read_ratio={read_ratio:.2f} import_ratio={import_ratio:.2f}")


if __name__ == "__main__":
    main()
