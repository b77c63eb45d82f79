"""`prompts import` on a store holding RouterBench's rows: it finds every family's questions among
RouterBench's renderings of them, attaches the gold answers there, adds only what is new, and never
moves a previous `evaluate`.

RouterBench's MMLU, HellaSwag, GSM8K and MT-Bench rows are not in ../shared/data, so the wide CSV
below holds a few: four real rows of RouterBench's (their prompt text as published), and others
rendered from the shared public questions the way RouterBench's generator did (martian's evals
``MultipleChoice``: a "Please answer…" lead-in for MMLU, the context alone for HellaSwag, the choices
shuffled, 0-shot or after 5 answered exemplars; GSM8K after its "TASK: …" header and exemplars).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.store import Store
from harness.evaluate import EvalSpec, evaluate
from harness.outcome_import import load_sources
from harness.tasks.prompt_import import import_prompts
from harness.tasks.hellaswag import read_items
from harness.tasks.prompt_match import canon, parse_mc
from tests.conftest import SHARED_DATA, require_shared

MODELS = ["gpt-4-1106-preview", "mistralai/mistral-7b-chat"]
LETTERS = "ABCD"
MC_INSTRUCTION = 'Print only a single choice  from "A" or "B" or "C" or "D" without explanation.'
LEAD_IN = "Please answer with the letter of the correct answer.\n\n"
GSM8K_HEADER = "TASK: Solve the following grade school math problem and provide a numerical answer.\nThe following are examples of grade school math problems and answers:\n"

# Real RouterBench rows (0-shot file), prompt text as published; the letter is RouterBench's gold.
REAL_ROWS = [
    (
        "mmlu-sociology.val.78",
        "mmlu-sociology",
        LEAD_IN + "Which of the following best describes the practice of placing the blame for the problems of a society on one "
        "particular group?\nA) Ethnocentrism\nB) Institutionalization\nC) Stereotyping\nD) Scapegoating\n" + MC_INSTRUCTION + " Answer:",
        "D",
    ),
    (
        "hellaswag.val.2680",
        "hellaswag",
        "A man dressed in winter gear is sitting out in winter on a frozen lake. he\nA) is holding a fishing pole in his hands and "
        "holding it periodically as he sucks in some water.\nB) is carving a piece of shoreline with a marker while another man sits "
        "on top of a ski slope near the boat.\nC) is sitting there with fishing equipment fishing on the frozen lake.\nD) is paddling "
        "through the difficult waters.\n" + MC_INSTRUCTION + "\nAnswer:",
        "C",
    ),
    (
        "hellaswag.val.1629",
        "hellaswag",
        "A team of basketball players are shown on the right side of the court doing lay-ups. after several turns\nA) a man comes "
        "into frame and begins demonstrating the steps to pull the ball up his body.\nB) the team takes off their helmets and tennis "
        "shoes.\nC) , they move to the left side of the court and begin practicing the lay ups once more.\nD) the game goes very well "
        "and many people run onto the court and watch young boys do various sports on the court.\n" + MC_INSTRUCTION + "\nAnswer:",
        "C",
    ),
    (  # RouterBench keeps HellaSwag's [header]/[title]/[step] tags that the shared validation file drops
        "hellaswag.val.5145",
        "hellaswag",
        "[header] How to make lavender breath freshener [title] Choose the best dry culinary lavender. [step] Many grocery stores sell "
        "lavender stems either in the spices or vegetable aisle. Farmer's markets are another great source.\nA) These produce more "
        "fragrant produce, rather than a more pungent source of odors. The moisture of the berries and herbs causes their leaves to "
        "produce more harsh, bitter scents.\nB) You will need an estimated 1 tablespoon (14. 8 ml) of dry lavender for this recipe.\nC) "
        "But if your home is very dry or stuffy, you should hire herbs that are hardy. [substeps] If this is a decision for you, go for "
        "the organic organic herbs, as they'll be almost entirely natural and can become the freshest scent.\nD) Call a local yard sale "
        "if your mom packed your garden with lemon/lime or other organic herbs and seeds. [title] Scoop out a cup of air freshener in a "
        "jar.\n" + MC_INSTRUCTION + "\nAnswer:",
        "B",
    ),
]
MMLU_SUBJECTS = ("sociology", "high_school_european_history")
MMLU_RENDERED = [("sociology", 5, 5), ("sociology", 120, 0), ("high_school_european_history", 3, 5), ("high_school_european_history", 40, 0)]
HELLASWAG_RENDERED = [(100, 5), (7000, 0)]
GSM8K_RENDERED = [0, 500]


def mc_block(question: str, choices: list[str], lead_in: bool, answer: str | None = None, hellaswag: bool = False) -> str:
    text = (LEAD_IN if lead_in else "") + question + "".join(f"\n{x}) {c}" for x, c in zip(LETTERS, choices))
    text += "\n" + MC_INSTRUCTION + ("\nAnswer:" if hellaswag else " Answer:")
    return text + (f"\n{answer}\n\n" if answer else "")


def shuffled(choices: list[str], answer: int, rng: random.Random) -> tuple[list[str], str]:
    order = list(range(len(choices)))
    rng.shuffle(order)
    return [choices[k] for k in order], LETTERS[order.index(answer)]


def rendered_rows() -> list[tuple[str, str, str, str]]:
    """(sample_id, eval_name, prompt, gold letter) in RouterBench's style from the shared sets."""
    rng, rows = random.Random(7), []
    for subject, i, shots in MMLU_RENDERED:
        test = pd.read_csv(SHARED_DATA / "mmlu" / "test" / f"{subject}_test.csv", dtype=str, keep_default_na=False)
        dev = pd.read_csv(SHARED_DATA / "mmlu" / "dev" / f"{subject}_dev.csv", dtype=str, keep_default_na=False)
        choice_cols = ["choice0", "choice1", "choice2", "choice3"]
        kshot = "".join(mc_block(r.question, [getattr(r, c) for c in choice_cols], True, LETTERS[int(r.answer)]) for r in dev.head(shots).itertuples())
        r = test.iloc[i]
        choices, gold = shuffled([r[c] for c in choice_cols], int(r["answer"]), rng)
        task = f"mmlu-{subject.replace('_', '-')}"
        rows.append((f"{task}.val.{i}", task, kshot + mc_block(r["question"], choices, True), gold))
    items = read_items(SHARED_DATA / "hellaswag" / "hellaswag_val_full.txt")
    for i, shots in HELLASWAG_RENDERED:
        # RouterBench's context is HellaSwag's own, without the activity label the shared file puts first
        context = lambda it: it["context"].split(": ", 1)[1]
        kshot = "".join(mc_block(context(e), e["endings"], False, LETTERS[int(e["label"])], hellaswag=True) for e in items[:shots])
        choices, gold = shuffled(items[i]["endings"], int(items[i]["label"]), rng)
        rows.append((f"hellaswag.val.{i}", "hellaswag", kshot + mc_block(context(items[i]), choices, False, hellaswag=True), gold))
    train = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:5]]
    test = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines()]
    exemplars = "".join(f"Question: {e['question']}\nAnswer: {e['answer'].rsplit('####', 1)[1].strip()}\n" for e in train)
    for i in GSM8K_RENDERED:
        gold = test[i]["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        rows.append((f"grade-school-math.dev.{i}", "grade-school-math", GSM8K_HEADER + exemplars + f"Question: {test[i]['question']}\nAnswer:", gold))
    return rows


def write_wide(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """RouterBench's wide layout: list-literal prompt cells, a score, response and cost per model."""
    table = {"sample_id": [r[0] for r in rows], "prompt": [str([r[2]]) for r in rows], "eval_name": [r[1] for r in rows]}
    for k, m in enumerate(MODELS):
        table[m] = [float((n + k) % 2) for n in range(len(rows))]
        table[f"{m}|model_response"] = [str([r[3]]) for r in rows]
        table[f"{m}|total_cost"] = [0.001 * (k + 1)] * len(rows)
    table["oracle_model_to_route_to"] = MODELS[1]
    pd.DataFrame(table).to_csv(path)
    return path


@pytest.fixture()
def fixture_store(tmp_path: Path):
    require_shared(SHARED_DATA / "mmlu")
    rows = REAL_ROWS + rendered_rows()
    store = Store(tmp_path / "store")
    batch = load_sources([str(write_wide(tmp_path / "routerbench_rows.csv", rows))])
    store.append(batch.prompts, batch.outcomes, source="routerbench rows")
    return store, {sid: (task, gold) for sid, task, _, gold in rows}


def mmlu_source(tmp_path: Path) -> Path:
    """Two MMLU subjects in the public layout (``test/``, ``dev/``)."""
    root = tmp_path / "mmlu"
    for split in ("test", "dev"):
        (root / split).mkdir(parents=True)
        for subject in MMLU_SUBJECTS:
            shutil.copy(SHARED_DATA / "mmlu" / split / f"{subject}_{split}.csv", root / split)
    return root


def family_rows(store: Store, family: str) -> pd.DataFrame:
    return store.prompts(["sample_id", "task", "prompt", "gold", "meta"], families=[family]).set_index("sample_id")


@pytest.mark.parametrize(
    "family, source",
    [("mmlu", None), ("hellaswag", SHARED_DATA / "hellaswag" / "hellaswag_val_full.txt"), ("grade-school-math", SHARED_DATA / "gsm8k" / "test.jsonl")],
)
def test_import_attaches_gold_to_routerbench_rows_and_adds_only_the_rest(fixture_store, tmp_path: Path, family: str, source: Path | None) -> None:
    store, expected = fixture_store
    ours = {sid: gold for sid, (task, gold) in expected.items() if task.startswith(family)}
    before = len(family_rows(store, family))
    assert before == len(ours)
    report = import_prompts(store, family, source or mmlu_source(tmp_path))
    assert report.attached == len(ours) and report.added == report.read - len(ours) and report.updated == 0
    stored = family_rows(store, family)
    assert len(stored) == report.read  # one prompt per question: nothing of RouterBench's doubled
    # RouterBench's gold letter in RouterBench's (shuffled) choice order, its prompt text untouched
    assert stored.loc[list(ours), "gold"].to_dict() == ours
    rb = stored.loc[list(ours)]
    assert all(json.loads(m)["gold_from"].endswith("by choice text" if family != "grade-school-math" else "by question text") for m in rb["meta"])
    assert not rb["meta"].map(lambda m: "question" in json.loads(m)).any()  # still sent exactly as RouterBench sent it
    # no question appears twice in the family: every RouterBench row's question is one stored row
    if family != "grade-school-math":
        keys = [canon(parse_mc(p)[0]) + "|" + "|".join(sorted(canon(c) for c in parse_mc(p)[1].values())) for p in stored["prompt"]]
        dup = pd.Series(keys)[pd.Series(keys).duplicated(keep=False)]
        assert len(dup) == len(set(dup)) * 2 or dup.empty  # only MMLU's own duplicated items, never RouterBench + ours
        assert not set(dup) & {keys[k] for k, sid in enumerate(stored.index) if sid in ours}
    # rerunning the import changes nothing
    again = import_prompts(store, family, source or mmlu_source(tmp_path / "again"))
    assert (again.added, again.attached, again.updated, again.unchanged) == (0, 0, 0, report.read)


def test_mtbench_questions_attach_to_routerbench_turn_lists(tmp_path: Path) -> None:
    """RouterBench's MT-Bench cell is the list of the two turns; the question set attaches its
    references and judge prompts there and adds the other 79."""
    questions = [json.loads(line) for line in (require_shared(SHARED_DATA / "mtbench") / "question.jsonl").read_text().splitlines()]
    q = questions[0]
    csv = tmp_path / "mt.csv"
    pd.DataFrame(
        {"sample_id": ["mtbench.dev.0"], "prompt": [str(q["turns"])], "eval_name": ["mtbench"], MODELS[0]: [0.9], f"{MODELS[0]}|model_response": ["['a']"], f"{MODELS[0]}|total_cost": [0.01]}
    ).to_csv(csv, index=False)
    store = Store(tmp_path / "store")
    batch = load_sources([str(csv)])
    store.append(batch.prompts, batch.outcomes)
    report = import_prompts(store, "mtbench", SHARED_DATA / "mtbench")
    assert (report.read, report.attached, report.added) == (80, 1, 79)
    meta = json.loads(family_rows(store, "mtbench").at["mtbench.dev.0", "meta"])
    assert meta["turns"] == q["turns"] and meta["question_id"] == q["question_id"] and meta["category"] == q["category"]


def test_generic_prompts_attach_by_exact_text(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    (tmp_path / "a.jsonl").write_text('{"sample_id": "a1", "prompt": "2+2?", "gold": "4"}\n{"sample_id": "a2", "prompt": "3+3?", "gold": "6"}\n')
    import_prompts(store, "generic", tmp_path / "a.jsonl", task="sums")
    (tmp_path / "b.jsonl").write_text('{"sample_id": "b1", "prompt": "2+2?", "gold": "4"}\n{"sample_id": "b2", "prompt": "2 + 2?", "gold": "4"}\n')
    report = import_prompts(store, "generic", tmp_path / "b.jsonl", task="sums")
    assert (report.attached, report.added) == (1, 1)  # "2 + 2?" is another text: a prompt of its own
    assert sorted(store.prompts(["sample_id"])["sample_id"]) == ["a1", "a2", "b2"]


ROUTERS = ("llm", "oracle", "random", "cascade")


def test_importing_prompt_sets_leaves_a_previous_evaluate_unchanged(routerbench_dir: Path, tmp_path: Path) -> None:
    """Attaching gold or adding other families' prompts moves neither the split nor any point or AIQ."""
    store = Store(tmp_path / "store")
    # rekeyed: RouterBench's 14 ARC ids shared by two prompts are kept (as id~hash), so the store has
    # every ARC question of the official files and the import adds none to the family
    batch = load_sources([str(routerbench_dir)], on_ambiguous="rekey")
    store.append(batch.prompts, batch.outcomes)
    spec = EvalSpec(ROUTERS, families=("arc-challenge", "mbpp", "winogrande"), bootstrap=20)
    before = evaluate(store, spec, parallel=False)
    texts = store.prompts(["sample_id", "prompt", "prompt_original"]).set_index("sample_id").sort_index()
    reports = [
        import_prompts(store, "arc-challenge", SHARED_DATA / "arc-challenge"),
        import_prompts(store, "mbpp", SHARED_DATA / "mbpp"),
        import_prompts(store, "winogrande", SHARED_DATA / "routerbench"),
        import_prompts(store, "grade-school-math", SHARED_DATA / "gsm8k" / "test.jsonl"),
        import_prompts(store, "mtbench", SHARED_DATA / "mtbench"),
    ]
    assert [(r.attached, r.added) for r in reports] == [(1444, 0), (427, 0), (0, 0), (0, 1319), (0, 80)]
    now = store.prompts(["sample_id", "prompt", "prompt_original"]).set_index("sample_id").sort_index()
    pd.testing.assert_frame_equal(now.loc[texts.index], texts)  # what routers embed is untouched
    assert len(now) == len(texts) + 1319 + 80
    after = evaluate(store, spec, parallel=False)
    pd.testing.assert_frame_equal(after.points, before.points)
    pd.testing.assert_frame_equal(after.aiq, before.aiq)
