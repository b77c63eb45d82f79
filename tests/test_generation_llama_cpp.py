"""The llama_cpp engine for real: llama.cpp's OpenAI-compatible server with the Gemma 3 270M GGUF
from PyPI, driven through the openai engine's Ray workers. Answers, usage, device-time cost, and
the server's whole process group gone after close."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.generation import Request, build_engine
from harness.generation.llama_cpp_engine import resolve_gguf
from harness.model_config import ModelConfig, load_model_config

ROOT = Path(__file__).resolve().parents[1]
GEMMA = ROOT / "model_configs" / "gemma3-270m-local.yaml"


def ask(sample_id: str, text: str, max_tokens: int = 16) -> Request:
    return Request(sample_id, [{"role": "user", "content": text}], max_tokens)


def test_model_resolution_errors_name_the_field(tmp_path: Path) -> None:
    missing_file = ModelConfig(name="x", provider="llama_cpp", model="nowhere.gguf", source=str(tmp_path / "x.yaml"))
    with pytest.raises(UserError, match=r"x.yaml: field 'model': no GGUF file at nowhere.gguf"):
        resolve_gguf(missing_file)
    no_package = ModelConfig(name="x", provider="llama_cpp", model="surely-not-a-model-package", source="x.yaml")
    with pytest.raises(UserError, match=r"field 'model': 'surely-not-a-model-package' is neither a .gguf file nor an installed model package"):
        resolve_gguf(no_package)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    relative = ModelConfig(name="x", provider="llama_cpp", model="m.gguf", source=str(tmp_path / "x.yaml"))
    assert resolve_gguf(relative) == gguf


@pytest.mark.slow
def test_a_server_that_fails_to_start_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    config = load_model_config(GEMMA).model_copy(update={"engine_args": {"no_such_flag": 1}, "source": "gemma.yaml"})
    engine = build_engine(config)
    with pytest.raises(UserError) as err:
        engine.start()
    message = str(err.value)
    assert message.startswith("gemma.yaml: llama.cpp server exited") and "--no_such_flag" in message and "\n" not in message
    engine.close()


@pytest.mark.slow
def test_a_server_that_dies_is_named_with_why_in_each_failed_answer(ray_local, caplog: pytest.LogCaptureFixture) -> None:
    """A llama.cpp build for another CPU dies of SIGILL at its first matrix product, after it
    answered /v1/models: every request then failed as a bare connection error."""
    config = load_model_config(GEMMA)
    engine = build_engine(config.model_copy(update={"limits": config.limits.model_copy(update={"max_retries": 0, "timeout_s": 30})}))
    engine.start()
    assert engine.generate([Request("before", [{"role": "user", "content": "Hello"}], 2)])[0].ok
    os.kill(engine.server.proc.pid, signal.SIGILL)
    engine.server.proc.wait(30)
    with caplog.at_level(logging.ERROR):
        after = engine.generate([Request("after", [{"role": "user", "content": "Hello"}], 2)])[0]
    assert not after.ok and after.error == "connection"
    assert "killed by SIGILL" in after.error_detail and "GGML_NATIVE=OFF" in after.error_detail
    assert sum("killed by SIGILL" in r.getMessage() for r in caplog.records) == 1
    engine.close()


@pytest.fixture(scope="module")
def gemma(ray_local):
    engine = build_engine(load_model_config(GEMMA))
    engine.start()
    yield engine
    server = engine.server
    engine.close()
    assert server.proc.poll() is not None  # the server is gone …
    with pytest.raises(ProcessLookupError):
        os.killpg(server.proc.pid, 0)  # … with its whole process group
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


@pytest.mark.slow
def test_answers_usage_and_cost(gemma) -> None:
    batch = [ask("capital", "The capital of France is"), ask("sum", "Two plus two equals"), ask("capital-again", "The capital of France is"), ask("long", "Describe the sea. " * 20, 8)]
    start = time.perf_counter()
    results = {r.sample_id: r for r in gemma.generate(batch)}
    wall = time.perf_counter() - start
    for r in results.values():
        assert r.ok, r.error_detail
        assert r.response.strip() and r.model == "gemma3-270m-local"
        assert r.input_tokens > 0 and 0 < r.output_tokens <= 16 and r.latency_s > 0
    assert results["long"].output_tokens <= 8 and results["long"].input_tokens > 5 * results["capital"].input_tokens
    assert results["capital"].response == results["capital-again"].response  # temperature 0
    # cost = device time: $0.10 per host-hour, split over the answers; adds up to the wall time
    total = sum(r.cost_usd for r in results.values())
    assert all(r.cost_usd > 0 for r in results.values())
    assert 0.8 * wall * 0.10 / 3600 <= total <= wall * 0.10 / 3600 * 1.001


@pytest.mark.slow
def test_chat_format_gemma_gives_non_empty_answers(gemma) -> None:
    r = gemma.generate([Request("chat", [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Name a colour."}], 8)])[0]
    assert r.ok and r.response.strip() and r.output_tokens > 0
