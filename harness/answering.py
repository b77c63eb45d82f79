"""One path from prompts to answers, for ``extend`` and ``generate`` alike.

A prompt becomes a *work row* here: its task family renders it (0- or k-shot) and names its
grader, and the config hash covers the model config and the prompt template, so an answer means
the same whichever command asked for it, and either command's rerun skips it. :class:`Answerer`
holds one engine and answers work rows: single-turn ones as one batch, multi-turn ones (MT-Bench)
turn by turn, each turn asked with the model's own earlier answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import pandas as pd

from harness.generation.base import Request, Result, build_engine
from harness.model_config import ModelConfig
from harness.prompt_meta import FamilySettings
from harness.ray_runtime import node_id
from harness.tasks import family_of, resolve, turns_of

#: A work row: the prompt, the family that renders it, how it is asked (``messages``, JSON; null for
#: a multi-turn prompt, rendered turn by turn while answering) and how it is graded; ``max_tokens``
#: (nullable) overrides sampling.
WORK_COLUMNS = ["sample_id", "task", "task_family", "family", "prompt", "gold", "meta", "messages", "max_tokens", "grader", "config_hash"]


def work_rows(prompts: pd.DataFrame, config: ModelConfig, shots: int = 0, families: Mapping[str, FamilySettings] | None = None) -> pd.DataFrame:
    """Stored prompt rows (``sample_id, task, task_family, prompt, gold, meta``) as work rows;
    ``families`` is what the store keeps per task family (:meth:`harness.store.StoreReader.families`).

    A row may bring its own ``messages`` (a prompt file's conversation) and ``max_tokens``; the
    rest is its family's rendering."""
    rows = []
    hashes: dict[str, str] = {}  # one config hash per prompt template
    for stored in prompts.to_dict("records"):
        fam, meta = resolve(stored, families)  # meta parsed once: the family calls below read the dict
        row = {**stored, "meta": meta}
        template = fam.template_id(shots)
        if template not in hashes:
            hashes[template] = config.config_hash({"template": template})
        given = row.get("messages")
        if isinstance(given, list):
            messages: str | None = json.dumps(given, ensure_ascii=False)
        else:
            messages = json.dumps(fam.render(row, shots), ensure_ascii=False) if turns_of(row) == 1 else None
        max_tokens = row.get("max_tokens")
        rows.append(
            {
                **{k: stored.get(k) for k in ("sample_id", "task", "task_family", "prompt", "gold", "meta")},
                "family": fam.name,
                "messages": messages,
                "max_tokens": None if max_tokens is None or pd.isna(max_tokens) else int(max_tokens),
                "grader": fam.grader_for(row),
                "config_hash": hashes[template],
            }
        )
    work = pd.DataFrame(rows, columns=WORK_COLUMNS)
    work["max_tokens"] = work["max_tokens"].astype("Int64")
    return work


def _requests(rows: pd.DataFrame) -> list[Request]:
    return [
        Request(s, json.loads(m), None if pd.isna(t) else int(t))
        for s, m, t in zip(rows["sample_id"], rows["messages"], rows["max_tokens"] if "max_tokens" in rows else [None] * len(rows))
        if m is not None
    ]


class Answerer:
    """One engine for ``config`` answering work rows; the ``extend`` pipeline runs it as a Ray Data
    actor (called with a batch), ``generate`` in its own process (:meth:`answer`, with progress)."""

    def __init__(self, config: ModelConfig, shots: int = 0) -> None:
        self.config = config
        self.shots = shots
        self.engine = build_engine(config)
        start = getattr(self.engine, "start", None)
        if callable(start):  # servers and replicas up before two batches may call in at once
            start()

    def answer(self, work: pd.DataFrame, on_result: Callable[[Result], None] | None = None) -> dict[str, Result]:
        """A result per work row, by sample_id; ``on_result`` sees each as it arrives (multi-turn ones when done)."""
        results: dict[str, Result] = {}
        for result in self.engine.stream(_requests(work)):
            results[result.sample_id] = result
            if on_result:
                on_result(result)
        multi = work[work["messages"].isna()]
        if len(multi):
            for result in self._answer_turns(multi).values():
                results[result.sample_id] = result
                if on_result:
                    on_result(result)
        return results

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        results = self.answer(batch)
        out = batch.copy()
        rs = [results[s] for s in batch["sample_id"]]
        # Typed columns: every block then has the same Arrow schema, whatever its nulls.
        out["response"] = pd.array([r.response for r in rs], dtype="string")
        out["input_tokens"] = pd.array([r.input_tokens for r in rs], dtype="Int64")
        out["output_tokens"] = pd.array([r.output_tokens for r in rs], dtype="Int64")
        out["latency_s"] = pd.array([r.latency_s for r in rs], dtype="Float64")
        out["cost_usd"] = pd.array([r.cost_usd for r in rs], dtype="Float64")
        out["error"] = pd.array([None if r.error is None else f"engine:{r.error}" for r in rs], dtype="string")
        out["generated_on"] = pd.array([node_id()] * len(out), dtype="string")
        return out

    def _answer_turns(self, rows: pd.DataFrame) -> dict[str, Result]:
        """Multi-turn prompts (MT-Bench): turn k is asked with the model's own answers to turns < k;
        the response is the JSON list of answers, usage and cost summed over the turns."""
        records = {r["sample_id"]: r for r in rows.to_dict("records")}
        answers: dict[str, list[str]] = {s: [] for s in records}
        totals = {s: Result(s, self.config.name, input_tokens=0, output_tokens=0, latency_s=0.0, cost_usd=0.0) for s in records}
        for turn in range(max(turns_of(r) for r in records.values())):
            live = [s for s, r in records.items() if turn < turns_of(r) and totals[s].ok]
            requests = [Request(s, family_of(records[s]).render(records[s], self.shots, answers=answers[s])) for s in live]
            for res in self.engine.generate(requests) if requests else []:
                total = totals[res.sample_id]
                total.input_tokens = (total.input_tokens or 0) + (res.input_tokens or 0)
                total.output_tokens = (total.output_tokens or 0) + (res.output_tokens or 0)
                total.latency_s = (total.latency_s or 0.0) + (res.latency_s or 0.0)
                total.cost_usd = (total.cost_usd or 0.0) + (res.cost_usd or 0.0)
                total.attempts += res.attempts
                total.error, total.error_detail = res.error, res.error_detail
                if res.ok:
                    answers[res.sample_id].append(res.response or "")
        for s, total in totals.items():
            total.response = json.dumps(answers[s], ensure_ascii=False) if total.ok else None
        return totals

    def close(self) -> None:
        self.engine.close()
