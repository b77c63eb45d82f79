"""Import at RouterBench's full scale: a generated wide file, then the shared sample, in one run.

Generates a RouterBench-shaped wide pickle (``routerbench_0shot.pkl``'s columns): 36,497 prompts ×
11 models, MMLU-style 5-shot prompt text (five worked exemplars and the question, ~3 KB per prompt,
as RouterBench's 5-shot MMLU prompts are), short responses, scores and costs. Each import
(``load_sources`` through the format registry, the restricted unpickler, then ``Store.append`` into
a fresh store) runs in its own subprocess; wall time and that process's peak RSS
(``ru_maxrss`` from ``wait4``) are printed. Then the same for the shared RouterBench sample
(../shared/data/routerbench). Last line: ``rows_per_s=<outcomes/s at full scale> peak_mb=<MB>``.
Targets: full scale under 30 s and 2 GB.

    python bench/bench_import.py [--prompts 36497] [--data ../shared/data/routerbench]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MODELS = [
    "WizardLM/WizardLM-13B-V1.2", "claude-instant-v1", "claude-v1", "claude-v2", "gpt-3.5-turbo-1106", "gpt-4-1106-preview",
    "meta/code-llama-instruct-34b-chat", "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat",
    "zero-one-ai/Yi-34B-Chat",
]
SUBJECTS = ["astronomy", "anatomy", "college-physics", "high-school-biology", "world-religions", "virology", "marketing", "nutrition"]
WORDS = "the of a to in is that for it as with was on be by this are or from at an which have not but all were when we there can more if".split()


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n)).capitalize()


def generate(path: Path, prompts: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    # a pool of exemplars and questions, combined per prompt: realistic length, cheap to make
    pool = [f"{_sentence(rng, 28)}?\nA. {_sentence(rng, 6)}\nB. {_sentence(rng, 6)}\nC. {_sentence(rng, 6)}\nD. {_sentence(rng, 6)}\nAnswer:" for _ in range(2000)]
    picks = rng.integers(0, len(pool), size=(prompts, 6))
    subjects = rng.integers(0, len(SUBJECTS), size=prompts)
    cells = []
    for i in range(prompts):
        head = f"The following are multiple choice questions (with answers) about {SUBJECTS[subjects[i]].replace('-', ' ')}.\n\n"
        shots = "\n\n".join(pool[j] + " " + "ABCD"[j % 4] for j in picks[i, :5])
        cells.append(str([head + shots + "\n\n" + pool[picks[i, 5]]]))
    df = pd.DataFrame({"sample_id": [f"mmlu-{SUBJECTS[s]}.val.{i}" for i, s in enumerate(subjects)], "prompt": cells, "eval_name": [f"mmlu-{SUBJECTS[s]}" for s in subjects]})
    cols: dict[str, object] = {}
    for m in MODELS:
        cols[m] = (rng.random(prompts) < 0.6).astype(float)
    for m in MODELS:
        cols[f"{m}|model_response"] = [str([" " + "ABCD"[k]]) for k in rng.integers(0, 4, prompts)]
    for m in MODELS:
        cols[f"{m}|total_cost"] = rng.uniform(1e-5, 3e-3, prompts)
    df = pd.concat([df, pd.DataFrame(cols)], axis=1)
    df["oracle_model_to_route_to"] = MODELS[0]
    df.to_pickle(path)


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from harness.store import Store
from harness.outcome_import import load_sources
t = time.perf_counter()
batch = load_sources([{src!r}])
res = Store({store!r}).append(batch.prompts, batch.outcomes, source="bench")
print(res.outcomes_added, res.prompts_added, time.perf_counter() - t)
"""


def run_import(src: Path, store: Path) -> tuple[int, int, float, float]:
    """(outcomes, prompts, wall seconds, peak RSS MB) of one import in a fresh process."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(ROOT), src=str(src), store=str(store))], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"import of {src} failed")
    outcomes, prompts, wall = out.split()
    return int(outcomes), int(prompts), float(wall), usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=36497)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "routerbench"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        tmp = Path(tmp)
        wide = tmp / "routerbench_full.pkl"
        t = time.perf_counter()
        generate(wide, args.prompts)
        print(f"generated {wide.name}: {args.prompts} prompts × {len(MODELS)} models, {wide.stat().st_size / 2**20:.0f} MB in {time.perf_counter() - t:.1f} s")
        full = run_import(wide, tmp / "store-full")
        print(f"full scale: {full[0]} outcomes, {full[1]} prompts in {full[2]:.1f} s, peak {full[3]:.0f} MB")
        if Path(args.data).exists():
            shared = run_import(Path(args.data), tmp / "store-shared")
            print(f"shared sample: {shared[0]} outcomes, {shared[1]} prompts in {shared[2]:.1f} s, peak {shared[3]:.0f} MB")
    print(f"rows_per_s={full[0] / full[2]:.0f} peak_mb={full[3]:.0f}")


if __name__ == "__main__":
    main()
