"""Served traffic becomes evaluation data: rows written as `routerbench serve` writes them, graded
later by the LLM judge (`regrade --family traffic --judge …`), idempotently, failures retried."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import UserError
from harness.serving.traffic import TrafficRow, traffic_frames
from harness.store import Store
from tests.echo import echo_config

PROMPTS = {  # the two judge prompts the grader requires, as MT-Bench's family keeps them
    "single-v1": {"name": "single-v1", "system_prompt": "You are a judge.", "prompt_template": "[Question]\n{question}\n[Answer]\n{answer}\nRate it [[1-10]]."},
    "single-v1-multi-turn": {"name": "single-v1-multi-turn", "system_prompt": "You are a judge.", "prompt_template": "### User:\n{question_1}\n{answer_1}\n### User:\n{question_2}\n{answer_2}"},
}


class Judge:
    """A local OpenAI-compatible judge: rates an answer containing ``good`` [[9]], others [[3]];
    while ``down`` it answers 500 (an engine failure)."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.calls += 1
                if judge.down:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                text = "\n".join(str(m["content"]) for m in body["messages"] if m["role"] == "user")
                answer = "Fine. Rating: [[9]]" if "good" in text else "Weak. Rating: [[3]]"
                doc = {
                    "id": "c", "object": "chat.completion", "created": 0, "model": body.get("model", "judge"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }  # fmt: skip
                data = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def judge():
    j = Judge()
    yield j
    j.close()


def cli(*args: object) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def cli_error(*args: object) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(res.exception, UserError), (res.output, res.exception)
    return str(res.exception)


def row(i: int, model: str, response: str | None, error: str | None = None) -> TrafficRow:
    return TrafficRow(
        sample_id=f"traffic-{i:03d}", prompt=f"question {i}?", model=model, route="knn@cost=0.001", router="knn", config="k=10", lam=0.5,
        predicted_quality=0.7, predicted_cost=0.001, response=response, input_tokens=5, output_tokens=3, cost_usd=1e-5, latency_s=0.1,
        config_hash="cfg-" + model, error=error, created_at=pd.Timestamp("2026-01-01", tz="UTC"),
    )  # fmt: skip


def traffic_store(tmp: Path) -> str:
    """A store with another family (graded, must stay untouched), MT-Bench's judge prompts and served traffic."""
    uri = str(tmp / "store")
    st = Store(uri)
    other = pd.DataFrame({"sample_id": ["q1"], "task": "qa", "task_family": "qa", "prompt": ["2+2?"], "gold": ["4"], "meta": [None]})
    st.append(
        other,
        pd.DataFrame({"sample_id": ["q1"], "model": "a", "response": ["4"], "score": [1.0], "cost_usd": [1e-5], "grader": ["exact-match@1"], "config_hash": ["h"]}),
        families=pd.DataFrame([{"task_family": "mtbench", "family": None, "grader": "mtbench-judge", "settings": json.dumps({"judge_prompts": PROMPTS})}]),
        source="test",
    )
    rows = [row(0, "a", "a good answer"), row(1, "b", "a bad answer"), row(2, "a", "good again"), row(3, "b", None, error="engine:timeout")]
    prompts, outcomes = traffic_frames(rows, "traffic")  # exactly as TrafficWriter writes a batch
    st.append(prompts, outcomes, source="serve traffic (traffic)")
    return uri


def test_regrade_family_traffic_scores_served_rows_with_the_judge(tmp_path: Path, judge: Judge, ray_local) -> None:
    uri = traffic_store(tmp_path)
    before_other = Store(uri).outcomes(models=["a"]).set_index("sample_id").loc[["q1"]]
    cfg = echo_config(tmp_path, judge.url, "local-judge", limits={"timeout_s": 5.0, "max_retries": 0, "backoff_s": 0.01}, sampling={"max_tokens": 32})

    assert cli_error("regrade", "--family", "traffic", "--store", uri).startswith("--family traffic: served traffic, no gold answers")
    assert "--judge model_configs/<judge>.yaml" in cli_error("regrade", "--family", "traffic", "--store", uri)
    assert cli_error("regrade", "--family", "nope", "--judge", cfg, "--store", uri).startswith("--family nope: no prompts of that task family")
    assert cli("regrade", "--store", uri).strip().endswith("nothing: every grade is current")  # without --family: traffic is not graded

    judge.down = True  # failed judge calls: recorded as grader errors, no score
    assert cli("regrade", "--family", "traffic", "--judge", cfg, "--store", uri).strip().endswith("regraded a: 2, b: 1")
    out = Store(uri).outcomes().set_index(["sample_id", "model"]).sort_index()
    served = out.loc[["traffic-000", "traffic-001", "traffic-002"]]
    assert served["score"].isna().all() and served["error"].str.startswith("grader:judge engine").all()

    judge.down = False  # a later run retries them
    calls = judge.calls
    assert cli("regrade", "--family", "traffic", "--judge", cfg, "--store", uri).strip().endswith("regraded a: 2, b: 1")
    assert judge.calls - calls == 3
    out = Store(uri).outcomes().set_index(["sample_id", "model"]).sort_index()
    assert out.loc[("traffic-000", "a"), "score"] == pytest.approx(0.9)
    assert out.loc[("traffic-001", "b"), "score"] == pytest.approx(0.3)
    assert out.loc[("traffic-002", "a"), "score"] == pytest.approx(0.9)
    graded = out.loc[["traffic-000", "traffic-001", "traffic-002"]]
    assert graded["grader"].str.startswith("mtbench-judge@1+local-judge+prompts-").all() and graded["error"].isna().all()
    assert graded["response"].tolist() == ["a good answer", "a bad answer", "good again"] and (graded["cost_usd"] == 1e-5).all()
    # nothing of the served row is lost: its tokens, latency, config hash, cost source and time stay
    assert (graded["input_tokens"] == 5).all() and (graded["latency_s"] == 0.1).all() and graded["config_hash"].tolist() == ["cfg-a", "cfg-b", "cfg-a"]
    assert (graded["cost_source"] == "tokens×price").all() and (graded["created_at"] == pd.Timestamp("2026-01-01", tz="UTC")).all()
    failed = out.loc[("traffic-003", "b")]  # the failed upstream call: not graded, kept as served
    assert np.isnan(failed["score"]) and failed["error"] == "engine:timeout" and pd.isna(failed["grader"])
    pd.testing.assert_frame_equal(Store(uri).outcomes(models=["a"]).set_index("sample_id").loc[["q1"]], before_other)

    calls, versions = judge.calls, Store(uri).versions()
    assert cli("regrade", "--family", "traffic", "--judge", cfg, "--store", uri).strip().endswith("regraded nothing: every grade is current")
    assert cli("regrade", "--judge", cfg, "--store", uri).strip().endswith("regraded nothing: every grade is current")  # a plain run keeps the judge's
    assert judge.calls == calls and Store(uri).versions() == versions  # no commit either, not even of the families table
    assert Store(uri).families()["traffic"].grader == "mtbench-judge"
    assert Store(uri).families()["traffic"].settings["judge_prompts"] == PROMPTS  # MT-Bench's, kept for the family
    assert "--judge" in cli_error("regrade", "--family", "traffic", "--store", uri)  # still the judge's family: a run without one says so


def test_regrade_family_traffic_needs_judge_prompts_in_the_store(tmp_path: Path, judge: Judge) -> None:
    uri = str(tmp_path / "store")
    prompts, outcomes = traffic_frames([row(0, "a", "a good answer")], "traffic")
    Store(uri).append(prompts, outcomes, source="serve traffic (traffic)")
    cfg = echo_config(tmp_path, judge.url, "local-judge")
    message = cli_error("regrade", "--family", "traffic", "--judge", cfg, "--store", uri)
    assert message == "--family traffic: the judge needs MT-Bench's judge prompts in the store: `routerbench prompts import mtbench DIR` (DIR with judge_prompts.jsonl) first"
    assert "traffic" not in Store(uri).families() and judge.calls == 0


def test_the_judge_reads_a_served_conversation_as_one_question() -> None:
    from harness.grading import grade_frame
    from harness.grading.judge import JudgeGrader, judge_prompts_from

    seen: list[list[dict]] = []

    def complete(messages: list[dict]) -> str:
        seen.append(messages)
        return "Rating: [[7]]"

    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "And 2+2?"}]
    grader = JudgeGrader(complete, judge_prompts_from({"judge_prompts": PROMPTS}), "j", concurrency=1)
    frame = pd.DataFrame({"response": ["4", "Paris"], "gold": [None, None], "meta": [None, None], "prompt": [json.dumps(conversation), "Capital of France?"]})
    graded = grade_frame(grader, frame)
    assert graded["score"].tolist() == [0.7, 0.7] and graded["error"].isna().all()
    assert len(seen) == 2  # one judge call each: the answer is to the conversation's last turn
    assert seen[0][1]["content"] == "[Question]\n[system]\nBe brief.\n\n[user]\nHi\n\n[assistant]\nHello\n\n[user]\nAnd 2+2?\n[Answer]\n4\nRate it [[1-10]]."
    assert seen[1][1]["content"] == "[Question]\nCapital of France?\n[Answer]\nParis\nRate it [[1-10]]."
