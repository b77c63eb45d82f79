"""Providers are engines found by name in one registry; what a provider needs is declared on its
engine class. A toy provider, installed only through an entry point (a ``.dist-info`` on the
path, as ``pip install`` leaves it), runs `generate` and `extend` against the fault server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.errors import UserError
from harness.generation.base import Engine, build_engine, engine_class
from harness.generation.testing.fault_server import FaultPlan, FaultServer
from harness.model_config import ModelConfig, load_model_config
from harness.components import ENGINES
from tests.conftest import ROOT

BUILT_IN = {
    # provider: (self_hosted, needs_key, needs_base_url)
    "openai": (False, True, False),
    "anthropic": (False, True, False),
    "openai_compatible": (False, False, True),
    "vllm": (True, False, False),
    "llama_cpp": (True, False, False),
}


@pytest.mark.parametrize("provider", sorted(BUILT_IN))
def test_built_in_engines_declare_what_their_provider_needs(provider: str) -> None:
    cls = engine_class(provider)
    assert issubclass(cls, Engine)
    assert (cls.self_hosted, cls.needs_key, cls.needs_base_url) == BUILT_IN[provider]


def test_a_config_is_checked_against_the_registry_and_the_engines_declarations(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "m", "provider": "openia", "model": "x"}))
    with pytest.raises(UserError) as err:
        load_model_config(path)
    message = str(err.value)
    assert "field 'provider'" in message and "'openia'" in message
    assert all(name in message for name in BUILT_IN)  # the registered names, plug-ins included
    # needs_base_url comes from the class, so a subclass declaring it is checked the same way
    with pytest.raises(Exception, match="needs base_url"):
        ModelConfig(name="m", provider="openai_compatible", model="x")
    assert ModelConfig(name="m", provider="vllm", model="x").self_hosted
    assert not ModelConfig(name="m", provider="openai", model="x").self_hosted


def test_batch_size_and_stage_resources_are_the_engines() -> None:
    api = ModelConfig(name="a", provider="openai", model="x", limits={"max_concurrency": 3}, resources={"replicas": 2})
    assert engine_class("openai").batch_size(api) == 4 * 3 * 2
    vllm = ModelConfig(name="v", provider="vllm", model="x", resources={"replicas": 2, "gpus": 1})
    assert engine_class("vllm").batch_size(vllm) == 512
    assert engine_class("vllm").stage_resources(vllm) == {"num_cpus": 0}  # its replicas hold the GPUs
    local = ModelConfig(name="l", provider="llama_cpp", model="x.gguf", resources={"gpus": 1})
    assert engine_class("llama_cpp").stage_resources(local) == {"num_cpus": 0, "num_gpus": 1}


def test_a_registered_non_engine_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENGINES._entries, "not-an-engine", "json:dumps")
    with pytest.raises(UserError, match="not-an-engine.*not a harness.generation.base.Engine subclass"):
        ModelConfig(name="m", provider="not-an-engine", model="x")
    with pytest.raises(UserError, match="not-an-engine.*not a harness.generation.base.Engine subclass"):
        build_engine(ModelConfig.model_construct(name="m", provider="not-an-engine", model="x"))


TOY_PLUGIN = '''
"""A toy provider: OpenAI's protocol, but every turn is sent in capitals (so its answers show it ran)."""
from harness.generation.api import ApiEngine
from harness.generation.openai_engine import OpenAIProtocol


class ShoutingProtocol(OpenAIProtocol):
    def body(self, request):
        body = super().body(request)
        body["messages"] = [{**m, "content": m["content"].upper()} for m in body["messages"]]
        return body


class ShoutingEngine(ApiEngine):
    protocol = ShoutingProtocol
    needs_base_url = True

    @classmethod
    def batch_size(cls, config):
        return 3
'''


def install_toy_provider(site: Path) -> None:
    """What `pip install` of a package declaring ``[project.entry-points."routerbench.engines"]`` leaves."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "toy_shouting.py").write_text(textwrap.dedent(TOY_PLUGIN))
    info = site / "toy_shouting-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-shouting\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[routerbench.engines]\nshouting = toy_shouting:ShoutingEngine\n")


def test_an_entry_point_provider_is_accepted_by_config_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_toy_provider(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ENGINES, "_entries", dict(ENGINES._entries))
    monkeypatch.setattr(ENGINES, "_plugins_loaded", False)
    config = ModelConfig(name="toy", provider="shouting", model="m", base_url="http://127.0.0.1:9/v1")
    assert engine_class("shouting").__name__ == "ShoutingEngine" and not config.self_hosted
    with pytest.raises(Exception, match="provider shouting needs base_url"):
        ModelConfig(name="toy", provider="shouting", model="m")


@pytest.mark.slow
def test_an_entry_point_provider_runs_generate_and_extend(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_toy_provider(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "ROUTERBENCH_STORE": str(tmp_path / "store")}
    cli = [str(Path(sys.executable).parent / "routerbench")]
    with FaultServer(FaultPlan(completion_tokens=2)) as server:
        config = tmp_path / "toy.yaml"
        config.write_text(yaml.safe_dump({"name": "toy-shouter", "provider": "shouting", "model": "m", "base_url": server.url, "sampling": {"max_tokens": 4}}))
        prompts = tmp_path / "p.jsonl"
        prompts.write_text("".join(json.dumps({"sample_id": f"t{i}", "prompt": f"yes {i}", "gold": f"YES {i}", "task": "echo"}) + "\n" for i in range(7)))

        out = tmp_path / "gen.parquet"
        done = subprocess.run([*cli, "generate", "--model", str(config), "--prompts", str(prompts), "--out", str(out)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        gen = pd.read_parquet(out).sort_values("sample_id")
        assert gen["response"].tolist() == [f"YES {i}" for i in range(7)]  # sent through the toy protocol

        steps = [["prompts", "import", "generic", str(prompts)], ["extend", "--model", str(config)]]
        for step in steps:
            done = subprocess.run([*cli, *step], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "toy-shouter: 7 prompts to do (0 already done), 7 outcomes appended, 7 graded" in done.stdout
    from harness.store import Store

    stored = Store(tmp_path / "store").outcomes(models=["toy-shouter"])
    assert sorted(stored["sample_id"]) == [f"t{i}" for i in range(7)]
    assert (stored["score"] == 1.0).all() and stored["error"].isna().all()  # the capitals match the gold
