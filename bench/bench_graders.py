"""Graders against labels others published: how often do we give the score they gave?

Reads ../shared/data by default (every path can be overridden):

- multiple choice: RouterBench's stored ARC-Challenge and Winogrande responses of its 11 models
  against RouterBench's scores. ARC gold: the official answer key, matched to RouterBench's
  prompts by question stem and choice *text* (RouterBench lists the choices in another order).
  Winogrande gold: recovered from RouterBench's own scores (its dev key is not public), so that
  part checks consistency, not independence;
- GSM8K: RouteLLM's GPT-4 and Mixtral responses against RouteLLM's labels, and the four GPT-3
  solutions of GSM8K's ``example_model_solutions.jsonl`` against their ``is_correct``. RouteLLM's
  labeling rule (SGLang's GSM8K benchmark: the last run of digits, commas removed) is ported here
  to explain every disagreement;
- MBPP: RouterBench's stored responses run against the sanitized MBPP tests, as standard grading
  does (the tests call the reference solution's function name) and with that name bound to the
  response's own function (RouterBench's 0-shot prompts never named it);
- MT-Bench: our rating parser on RouteLLM's 320 GPT-4 judgments; with ``--judge-config`` also a
  judge model re-rating turn-1 answers, correlated with GPT-4's scores.

    python bench/bench_graders.py [--data ../shared/data] [--judge-config model_configs/x.yaml]

Last line: ``mc=<percent> gsm8k=<lowest percent over the models> mbpp=<percent over all models>``.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.store import Store  # noqa: E402
from harness.grading import build_grader, grade_frame  # noqa: E402
from harness.grading.judge import JudgeGrader, parse_rating  # noqa: E402
from harness.tasks.mtbench import load_judge_prompts  # noqa: E402
from harness.grading.math import NUMBER, extract_answer  # noqa: E402
from harness.grading.sandbox import SandboxLimits, capabilities  # noqa: E402
from harness.outcome_import import load_sources  # noqa: E402
from harness.tasks.prompt_import import import_prompts  # noqa: E402
from harness.tasks.routerbench_gold import derive_gold, gold_agreement  # noqa: E402

GSM8K_MODELS = ("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")
GPT3_VARIANTS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def table(df: pd.DataFrame) -> None:
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


# ---------------------------------------------------------------------- RouterBench store
def routerbench_store(args: argparse.Namespace, where: Path) -> Store:
    """RouterBench's shared CSVs imported as `routerbench import` does, then ARC's answer key, MBPP's
    tests and Winogrande's recovered gold attached to those prompts as `routerbench prompts import` does."""
    store = Store(where)
    batch = load_sources([str(args.routerbench)])
    store.append(batch.prompts, batch.outcomes, source="bench")
    for family, source in (("arc-challenge", args.arc), ("winogrande", args.routerbench), ("mbpp", args.mbpp)):
        report = import_prompts(store, family, source)
        print(f"  {family}: {report.read} read, gold attached to {report.attached + report.updated} RouterBench prompts, {report.added} added")
        for note in report.notes:
            print(f"    {note}")
    return store


def stored_outcomes(store: Store, family: str) -> pd.DataFrame:
    """RouterBench's outcomes of one family with their prompt, gold and meta (prompts the import
    added have no outcomes and drop out)."""
    prompts = store.prompts(["sample_id", "prompt", "gold", "meta"], families=[family])
    outcomes = store.outcomes(["sample_id", "model", "response", "score"])
    return outcomes.merge(prompts, on="sample_id")


# ---------------------------------------------------------------------- multiple choice
def multiple_choice(store: Store) -> float:
    print("\n== multiple choice vs RouterBench's scores ==")
    frames = []
    for family in ("arc-challenge", "winogrande"):
        o = stored_outcomes(store, family)
        o = o[o["gold"].notna()].reset_index(drop=True)
        graded = grade_frame(build_grader("multiple-choice"), o)
        o = o.assign(ours=graded["score"].to_numpy(), extracted=graded["extracted"].to_numpy(), family=family)
        frames.append(o)
        print(f"{family}: {o['sample_id'].nunique()} prompts with gold × {o['model'].nunique()} models")
    o = pd.concat(frames, ignore_index=True)
    o["agree"] = o["ours"].to_numpy() == o["score"].to_numpy()
    per = o.pivot_table(index="model", columns="family", values="agree", aggfunc="mean").reset_index()
    table(per)
    bad = o[~o["agree"]]
    print(f"disagreements: {len(bad)} of {len(o)}")
    for r in bad.head(8).itertuples():
        print(f"  {r.sample_id} {r.model}: response {r.response[:40]!r} gold {r.gold} → ours {r.ours:g}, RouterBench {r.score:g}")
    arc = stored_outcomes(store, "arc-challenge")
    arc_prompts = arc.drop_duplicates("sample_id")
    derived = derive_gold(arc_prompts[["sample_id", "prompt"]], arc[["sample_id", "model", "response", "score"]])
    agree, compared = gold_agreement(derived, arc_prompts.set_index("sample_id")["gold"])
    print(f"ARC gold recovered from RouterBench's scores agrees with the answer key on {agree} of {compared} prompts")
    return float(o["agree"].mean())


# ---------------------------------------------------------------------- GSM8K
def routellm_rule(text: str) -> object:
    """RouteLLM's labeling rule (SGLang's GSM8K benchmark): commas out, last run of digits, literal_eval."""
    numbers = re.findall(r"\d+", str(text).replace(",", ""))
    if not numbers:
        return -9999999
    try:
        return ast.literal_eval(numbers[-1])
    except SyntaxError:
        return -9999999


def _why(response: str) -> str:
    """Why RouteLLM's rule and ours read a response differently."""
    text = re.sub(r"<<[^<>]*>>", "", response)
    last = list(NUMBER.finditer(text))
    fragment = bool(last) and re.sub(r"[^\d]", "", last[-1].group(0).split(".")[0].split("/")[-1]) != str(routellm_rule(text))
    if fragment or (last and ("." in last[-1].group(0) or "/" in last[-1].group(0) or "-" in last[-1].group(0))):
        return "their rule reads a fragment of a number (decimals, a sign or a fraction)"
    if extract_answer(response)[1] != (last[-1].group(0).strip() if last else None):
        return "the response commits to an answer before its last number"
    return "other"


def gsm8k(args: argparse.Namespace) -> float:
    print("\n== GSM8K vs published labels ==")
    test = [json.loads(line) for line in Path(args.gsm8k_test).read_text().splitlines() if line.strip()]
    gold = {t["question"]: t["answer"].rsplit("####", 1)[1].strip().replace(",", "") for t in test}
    grader = build_grader("math")
    rows = []
    df = pd.read_csv(args.gsm8k_responses)
    df["gold"] = df["prompt"].map(gold)
    reasons: dict[str, int] = {}
    for model in GSM8K_MODELS:
        responses = df[f"{model}_response"].fillna("").astype(str)
        ours = np.array([g.score for g in grader.grade_batch(responses.tolist(), df["gold"].tolist())], dtype=float)
        labels = df[model].astype(bool).to_numpy()
        theirs = np.array([routellm_rule(r) == routellm_rule(g) for r, g in zip(responses, df["gold"])])
        rows.append((f"RouteLLM {model}", len(df), (ours == labels).mean(), (theirs == labels).mean()))
        for r in responses[ours != labels]:
            why = _why(r)
            reasons[why] = reasons.get(why, 0) + 1
    sols = [json.loads(line) for line in Path(args.gsm8k_solutions).read_text().splitlines() if line.strip()]
    golds = [s["ground_truth"].rsplit("A:", 1)[-1].strip() for s in sols]
    for variant in GPT3_VARIANTS:
        ours = np.array([g.score for g in grader.grade_batch([s[variant]["solution"] for s in sols], golds)], dtype=float)
        labels = np.array([s[variant]["is_correct"] for s in sols])
        rows.append((f"GPT-3 {variant}", len(sols), (ours == labels).mean(), np.nan))
    result = pd.DataFrame(rows, columns=["model", "n", "agreement", "routellm_rule"])
    table(result)
    print("disagreements with RouteLLM's labels, by cause (read by hand here: in each, our grade follows the answer the response gives):")
    for why, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}  {why}")
    print("RouteLLM's labels are its rule's output (routellm_rule = 1.0): the rule takes '$20.00' as 0 and '0.5' as 5.")
    return float(result["agreement"].min())


# ---------------------------------------------------------------------- MBPP
def mbpp(store: Store, args: argparse.Namespace) -> float:
    print("\n== MBPP: RouterBench's responses run against the sanitized MBPP tests ==")
    caps = capabilities()
    print(f"sandbox: network namespace {caps.network_namespace}, read-only mounts {caps.mount_namespace}, pids cgroup {bool(caps.pids_cgroup)}, RLIMIT_NPROC {caps.nproc_rlimit}")
    o = stored_outcomes(store, "mbpp")
    o = o[o["gold"].notna()].reset_index(drop=True)
    if args.mbpp_limit:
        keep = sorted(o["sample_id"].unique())[: args.mbpp_limit]
        o = o[o["sample_id"].isin(keep)].reset_index(drop=True)
    limits = SandboxLimits(wall_s=10, cpu_s=5)
    modes = {"standard": {}, "name-bound": {"bind_entry_point": True}}
    for mode, options in modes.items():
        started = time.monotonic()
        graded = grade_frame(build_grader("code-exec", limits=limits, workers=args.workers, **options), o)
        o[f"{mode}"] = graded["score"].to_numpy()
        o[f"{mode}_why"] = graded["extracted"].to_numpy()
        print(f"{mode}: {len(o)} programs in {time.monotonic() - started:.0f} s")
    per = o.groupby("model").agg(
        n=("score", "size"),
        label_rate=("score", "mean"),
        standard_pass=("standard", "mean"),
        name_bound_pass=("name-bound", "mean"),
        agree_standard=("standard", lambda s: float((s == o.loc[s.index, "score"]).mean())),
        agree_name_bound=("name-bound", lambda s: float((s == o.loc[s.index, "score"]).mean())),
    )
    table(per.reset_index())
    agree_std = float((o["standard"] == o["score"]).mean())
    agree_bound = float((o["name-bound"] == o["score"]).mean())
    print(f"all models: standard {pct(agree_std)} %, name-bound {pct(agree_bound)} %")
    cross = pd.crosstab(o["score"].rename("RouterBench label"), o["name-bound"].rename("name-bound tests"))
    print(cross.to_string())
    exact = o[o["standard"] == 1.0]
    print(f"responses that pass the exact tests under the exact name: {len(exact)}, of which RouterBench labeled {int((exact['score'] == 0).sum())} wrong")
    failing = o[(o["score"] == 1.0) & (o["name-bound"] == 0.0)]["name-bound_why"].fillna("").str.extract(r"(\w+Error|no-code|killed|timeout)")[0]
    print("labeled right but failing the name-bound tests, by error:", ", ".join(f"{k} {v}" for k, v in failing.value_counts().head(6).items()))
    return agree_bound


# ---------------------------------------------------------------------- MT-Bench judge
_TURN1 = re.compile(r"\[Question\]\n(.*)\n\n(?:\[The Start of Reference Answer\]\n(.*)\n\[The End of Reference Answer\]\n\n)?\[The Start of Assistant's Answer\]\n(.*)\n\[The End of Assistant's Answer\]", re.DOTALL)


def mtbench(args: argparse.Namespace) -> None:
    print("\n== MT-Bench judge ==")
    rows = [json.loads(line) for line in Path(args.judgements).read_text().splitlines() if line.strip()]
    parsed = [parse_rating(r["judgment"]) == float(r["score"]) for r in rows]
    print(f"rating parser on RouteLLM's GPT-4 judgments: {sum(parsed)} of {len(rows)} read as GPT-4's score")
    if not args.judge_config:
        print("judge run: skipped (no --judge-config)")
        return
    from harness.grading.judge import engine_completer
    from harness.model_config import load_model_config

    config = load_model_config(args.judge_config)
    turn1 = [(r, _TURN1.search(r["user_prompt"])) for r in rows if r["turn"] == 1]
    turn1 = sorted([(r, m) for r, m in turn1 if m], key=lambda t: (float(t[0]["score"]), t[0]["question_id"], t[0]["model"]))
    pick = np.unique(np.linspace(0, len(turn1) - 1, min(args.judge_samples, len(turn1))).round().astype(int))
    turn1 = [turn1[i] for i in pick]  # spread over GPT-4's scores, so a correlation means something
    grader = JudgeGrader(engine_completer(config, args.judge_max_tokens), load_judge_prompts(args.judge_prompts), config.name, concurrency=4)
    grades = grader.grade_batch(
        [m.group(3) for _, m in turn1],
        [json.dumps([m.group(2)]) if m.group(2) else None for _, m in turn1],
        [{"turns": [m.group(1)], "category": "math" if m.group(2) else "writing"} for _, m in turn1],
    )
    ours = np.array([np.nan if g.score is None else g.score * 10 for g in grades])
    gpt4 = np.array([float(r["score"]) for r, _ in turn1])
    ok = ~np.isnan(ours)
    varied = ok.sum() > 2 and np.ptp(ours[ok]) > 0 and np.ptp(gpt4[ok]) > 0
    corr = float(pd.Series(ours[ok]).corr(pd.Series(gpt4[ok]), method="spearman")) if varied else float("nan")
    print(f"judge {config.name}: {ok.sum()} of {len(turn1)} answers rated; Spearman with GPT-4's scores {corr:.3f}")
    print(f"  ratings (GPT-4 → ours): {', '.join(f'{a:g}→{b:g}' for a, b in zip(gpt4, ours))}")
    errors = pd.Series([g.error.split(":")[1].split(" (")[0] if g.error else "rated" for g in grades]).value_counts()
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    for detail in sorted({g.error for g in grades if g.error})[:3]:
        print(f"  e.g. {detail[:160]}")
    print("(a small local judge measures the plumbing — prompts, calls, parsing — not the quality of judging)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--routerbench", type=Path)
    p.add_argument("--arc", type=Path)
    p.add_argument("--mbpp", type=Path)
    p.add_argument("--gsm8k-test", type=Path)
    p.add_argument("--gsm8k-responses", type=Path)
    p.add_argument("--gsm8k-solutions", type=Path)
    p.add_argument("--judgements", type=Path)
    p.add_argument("--judge-prompts", type=Path)
    p.add_argument("--judge-config", type=Path, help="A model config for the judge; without it the judge run is skipped.")
    p.add_argument("--judge-samples", type=int, default=20)
    p.add_argument("--judge-max-tokens", type=int, default=512, help="Room for the judge's explanation and rating.")
    p.add_argument("--workers", type=int, default=None, help="Concurrent sandboxes (default: CPU count).")
    p.add_argument("--mbpp-limit", type=int, default=0, help="Only the first N MBPP prompts (0: all 427).")
    p.add_argument("--sections", default="mc,gsm8k,mbpp,mtbench", help="Comma-separated parts to run (default: all).")
    args = p.parse_args()
    d = args.data
    defaults = {
        "routerbench": d / "routerbench",
        "arc": d / "arc-challenge",
        "mbpp": d / "mbpp" / "sanitized-mbpp.json",
        "gsm8k_test": d / "gsm8k" / "test.jsonl",
        "gsm8k_responses": d / "routellm" / "gsm8k_responses.csv",
        "gsm8k_solutions": d / "gsm8k" / "example_model_solutions.jsonl",
        "judgements": d / "routellm" / "mtbench_judgements.jsonl",
        "judge_prompts": d / "mtbench" / "judge_prompts.jsonl",
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    sections = {s.strip() for s in args.sections.split(",")}
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-graders-") as tmp:
        if sections & {"mc", "mbpp"}:
            print("RouterBench sample with gold answers attached:")
            store = routerbench_store(args, Path(tmp) / "store")
        if "mc" in sections:
            results["mc"] = multiple_choice(store)
        if "gsm8k" in sections:
            results["gsm8k"] = gsm8k(args)
        if "mbpp" in sections:
            results["mbpp"] = mbpp(store, args)
        if "mtbench" in sections:
            mtbench(args)
    print("\nmc=agreement over ARC+Winogrande × 11 models; gsm8k=lowest model; mbpp=name-bound tests over all models")
    print(" ".join(f"{k}={pct(results[k]) if k in results else 'skipped'}" for k in ("mc", "gsm8k", "mbpp")))


if __name__ == "__main__":
    main()
