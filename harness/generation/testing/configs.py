"""Model configs pointing at a running :class:`FaultServer`, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.generation.testing.fault_server import FaultServer
from harness.model_config import ModelConfig

FAST_RETRIES = {"timeout_s": 1.0, "backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 3}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def fault_config(server: FaultServer, protocol: str = "openai", **fields: Any) -> ModelConfig:
    """An ``openai_compatible`` (or ``anthropic``) config for ``server``, quick to retry;
    ``fields`` override (nested dicts merge), e.g. ``limits={"max_spend_usd": 1}``."""
    base: dict[str, Any] = {
        "name": f"fault-{protocol}",
        "provider": "openai_compatible" if protocol == "openai" else "anthropic",
        "model": "fault-model",
        "base_url": server.url if protocol == "openai" else server.root_url,
        "limits": FAST_RETRIES,
        "sampling": {"max_tokens": 16},
    }
    return ModelConfig(**_merge(base, fields))


#: A fault-server config's defaults beyond its address: priced, quick to retry, one call at a time, one-token answers.
FAULT_CONFIG_DEFAULTS: dict[str, Any] = {
    "provider": "openai_compatible",
    "model": "fault-model",
    "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
    "limits": {"timeout_s": 5.0, "backoff_s": 0.01, "max_backoff_s": 0.05, "max_retries": 2, "max_concurrency": 1},
    "sampling": {"max_tokens": 1},
}


def write_fault_config(directory: Path, url: str, name: str, **fields: Any) -> Path:
    """A model config file ``directory/<name>.yaml`` for the fault server at ``url`` (``fields``
    override :data:`FAULT_CONFIG_DEFAULTS`, nested dicts merge), as the CLI and jobs read it."""
    doc = _merge({**FAULT_CONFIG_DEFAULTS, "name": name, "base_url": url}, fields)
    path = Path(directory) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
