"""LLM judge for MT-Bench: single-answer grading, 1–10 → score = rating / 10.

The judge is any model: the grader calls an injected ``complete(messages) -> str`` (see
:func:`engine_completer`, which wraps any model config's engine). Prompts are MT-Bench's own judge
prompts (``judge_prompts.jsonl``): ``single-v1`` for the first turn and ``single-v1-multi-turn``
for the second, and their ``-math-`` variants with GPT-4's reference answers for math, reasoning and
coding questions. The question's turns come from ``meta["turns"]`` (else the prompt, a JSON list of
turns); the response is the answer text, or a JSON list with one answer per turn; gold is the JSON
list of reference answers (may be null). A multi-turn answer scores the mean over its turns. Served
traffic (no gold) is judged the same way: a served conversation (:func:`served_conversation`) is one
question, its transcript, and the answer to its last turn.

Scale: rating / 10, as RouterBench stored MT-Bench (so 1 → 0.1, 10 → 1.0), rather than
(rating − 1) / 9. The grader's id names the judge model (its ``judge`` option, a model config that
every run must give: an id names a model, it holds no config) and a hash of the prompt templates,
so the store records which judge and which prompts produced a score. A rating the judge did not
give in a readable form ("[[7]]", "[7]", "Rating: 7") is a grader error, never a 0.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Annotated, Any, Callable, Mapping, Sequence

from harness.errors import UserError
from harness.grading.base import ConfigValue, Grade, Grader, GraderOptions, ModelOption, failed
from harness.tasks.mtbench import JUDGE_PROMPTS_KEY, REFERENCE_CATEGORIES, JudgePrompt, judge_prompts_from

Messages = list[dict[str, str]]
Complete = Callable[[Messages], str]

_RATING = (
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),
    re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]"),
    re.compile(r"rating\s*(?:is|of|:)?\s*:?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.IGNORECASE),
)


def parse_rating(judgment: str) -> float | None:
    """The 1–10 rating in a judge's output: the last ``[[r]]``, else ``[r]``, else ``Rating: r``."""
    for pattern in _RATING:
        found = [float(m) for m in pattern.findall(judgment)]
        if found:
            rating = found[-1]
            return rating if 1.0 <= rating <= 10.0 else None
    return None


def served_conversation(prompt: object) -> list[dict[str, str]] | None:
    """A served prompt's conversation, or None for a single question. ``routerbench serve`` stores a
    request of one user message as its text and any other as the JSON list of its messages
    (``{"role", "content"}``): asked again and judged as that conversation."""
    if not isinstance(prompt, str) or not prompt.startswith("["):
        return None
    try:
        doc = json.loads(prompt)
    except ValueError:
        return None
    if isinstance(doc, list) and doc and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in doc):
        return [{"role": m["role"], "content": m["content"]} for m in doc]
    return None


def _questions(meta: Mapping[str, Any]) -> list[str]:
    """The question turns to judge: ``meta["turns"]`` (MT-Bench's), else the prompt's; a served
    conversation is one question, its messages as a transcript (the answer is to its last turn)."""
    turns = meta.get("turns")  # a count, not the turns, in rows imported from RouterBench's wide layout
    if isinstance(turns, list):
        return [str(t) for t in turns]
    conversation = served_conversation(meta.get("prompt"))
    if conversation is not None:
        return ["\n\n".join(f"[{m['role']}]\n{m['content']}" for m in conversation)]
    return _turns(meta.get("prompt"))


def _turns(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str) and value.startswith("["):
        try:
            doc = json.loads(value)
            if isinstance(doc, list):
                return [str(v) for v in doc]
        except ValueError:
            pass
    return [] if value is None else [str(value)]


class JudgeOptions(GraderOptions):
    judge: Annotated[ConfigValue, ModelOption(required=True)] = None  # the judge's model config


class JudgeGrader(Grader):
    name = "mtbench-judge"
    version = "1"
    needs_gold = False
    Options = JudgeOptions
    settings_keys = (JUDGE_PROMPTS_KEY,)

    def __init__(self, complete: Complete, prompts: dict[str, JudgePrompt], judge_model: str, concurrency: int = 8) -> None:
        missing = [n for n in ("single-v1", "single-v1-multi-turn") if n not in prompts]
        if missing:
            raise UserError(f"judge prompts lack {', '.join(missing)}; give MT-Bench's judge_prompts.jsonl")
        self.complete = complete
        self.prompts = prompts
        self.judge_model = judge_model
        self.concurrency = concurrency
        self.prompts_digest = hashlib.sha256(json.dumps([asdict(p) for p in sorted(prompts.values(), key=lambda p: p.name)]).encode()).hexdigest()[:8]

    @classmethod
    def from_options(cls, options: GraderOptions, settings: Mapping[str, Any]) -> JudgeGrader:
        """The judge its ``judge`` config names, with the judge prompts MT-Bench's family keeps in the store."""
        config = options.judge  # type: ignore[attr-defined]
        return cls(engine_completer(config), judge_prompts_from(settings), config.name)

    def id_tags(self) -> list[str]:
        return [self.judge_model, f"prompts-{self.prompts_digest}"]

    def _prompt(self, category: str, turn: int, has_reference: bool) -> JudgePrompt:
        math = has_reference and category in REFERENCE_CATEGORIES
        name = ("single-math-v1" if math else "single-v1") + ("-multi-turn" if turn == 2 else "")
        return self.prompts.get(name) or self.prompts["single-v1" + ("-multi-turn" if turn == 2 else "")]

    def judge_messages(self, questions: Sequence[str], answers: Sequence[str], references: Sequence[str], category: str, turn: int) -> tuple[JudgePrompt, Messages]:
        """The chat messages that ask the judge to rate turn ``turn`` (1 or 2)."""
        prompt = self._prompt(category, turn, len(references) >= turn)
        fields = {"question": questions[0], "answer": answers[0], "question_1": questions[0], "answer_1": answers[0]}
        if turn == 2:
            fields.update(question_2=questions[1], answer_2=answers[1])
        for i, ref in enumerate(references, 1):
            fields[f"ref_answer_{i}"] = ref
        user = prompt.prompt_template.format(**{k: fields.get(k, "") for k in re.findall(r"\{(\w+)\}", prompt.prompt_template)})
        return prompt, [{"role": "system", "content": prompt.system_prompt}, {"role": "user", "content": user}]

    def grade_valid(self, responses: list[str], golds: list[str | None], metas: list[dict]) -> list[Grade]:
        jobs: list[tuple[int, Messages]] = []
        early: dict[int, Grade] = {}
        for i, (response, gold, meta) in enumerate(zip(responses, golds, metas)):
            questions = _questions(meta)
            answers = _turns(response)[: len(questions)]
            if not questions or len(answers) < 1:
                early[i] = failed("no question turns in meta['turns'] or the prompt")
                continue
            for turn in range(1, len(answers) + 1):
                _, messages = self.judge_messages(questions, answers, _turns(gold), str(meta.get("category", "")), turn)
                jobs.append((i, messages))

        def ask(messages: Messages) -> str | Exception:
            try:
                return self.complete(messages)
            except Exception as exc:  # noqa: BLE001 - an engine failure is recorded per outcome
                return exc

        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            outputs = list(pool.map(ask, [m for _, m in jobs]))
        per_item: dict[int, list[str | Exception]] = {}
        for (i, _), out in zip(jobs, outputs):
            per_item.setdefault(i, []).append(out)
        grades = []
        for i in range(len(responses)):
            if i in early:
                grades.append(early[i])
                continue
            outs = per_item[i]
            errors = [o for o in outs if isinstance(o, Exception)]
            if errors:
                grades.append(failed(f"judge engine: {type(errors[0]).__name__}: {str(errors[0])[:160]}"))
                continue
            ratings = [parse_rating(str(o)) for o in outs]
            shown = ",".join("?" if r is None else f"{r:g}" for r in ratings)
            if any(r is None for r in ratings):
                grades.append(failed("judge gave no rating in [[1-10]] form", shown))
                continue
            grades.append(Grade(sum(ratings) / len(ratings) / 10.0, None, shown))  # type: ignore[arg-type]
        return grades


def engine_completer(config: object, max_tokens: int | None = None) -> Complete:
    """``complete(messages) -> text`` for any model config, through its engine (harness.generation).

    ``max_tokens`` overrides the config's: a judge writes its explanation before the rating. The
    first call runs alone (engines start servers or Ray lazily); later calls may run concurrently.
    """
    from harness.generation.base import Request, build_engine

    engine = build_engine(config)  # type: ignore[arg-type]
    first_call = threading.Lock()
    started = threading.Event()

    def call(messages: Messages) -> str:
        result = engine.generate([Request(sample_id="judge", messages=messages, max_tokens=max_tokens)])[0]
        if result.error is not None or result.response is None:
            raise RuntimeError(f"engine:{result.error}: {result.error_detail or ''}".strip())
        return result.response

    def complete(messages: Messages) -> str:
        if not started.is_set():
            with first_call:
                if not started.is_set():
                    try:
                        return call(messages)
                    finally:
                        started.set()
        return call(messages)

    return complete
