"""Model configs: one YAML file per LLM in ``model_configs/``, validated on load.

A config says how to reach the model (provider, model id, endpoint, key variable), what it costs,
how fast it may be called, how to sample, and what hardware a self-hosted engine needs. The store
records outcomes under ``name``; ``config_hash`` fingerprints everything that changes answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from harness.errors import UserError
from harness.components import ENGINES, engine_class
from harness.yaml_file import FieldError, load_record

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_FIELDS = ("api_key_env",)  # values never echoed in error messages
#: Every ``api_key_env`` of every config this process has validated: the variables that must not
#: reach processes that run no engine (graders, Ray's workers; see :func:`key_variables`).
_KEY_VARIABLES: set[str] = set()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """Dollar prices. API models: per 1M input/output tokens and per request; self-hosted: per GPU-hour."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)
    per_request: float = Field(0.0, ge=0)
    gpu_hour: float = Field(0.0, ge=0)

    @property
    def per_token(self) -> float:
        """Input + output list price per token: RouterBench's routing cost term."""
        return (self.input_per_mtok + self.output_per_mtok) / 1e6

    def cost(self, input_tokens: float, output_tokens: float, requests: float = 1.0) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6 + requests * self.per_request


class Limits(_Strict):
    """How hard a model may be called. Rates are enforced by one limiter per provider key and model
    (a named Ray actor shared by every worker); ``max_spend_usd`` counts each call at its worst case
    (prompt + max_tokens) until its usage is known, so the cap is never exceeded."""

    requests_per_min: float | None = Field(None, gt=0)
    tokens_per_min: float | None = Field(None, gt=0)
    max_concurrency: int = Field(8, ge=1)
    max_spend_usd: float | None = Field(None, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    # Transient failures (429, 5xx, timeouts, dropped connections, malformed bodies) are retried
    # until this many seconds after a request's first failure: a long batch needs no reruns.
    retry_deadline_s: float = Field(600.0, gt=0)
    # At most this many retries within the deadline; None: as many as the deadline allows.
    max_retries: int | None = Field(None, ge=0)
    # Seconds of the per-minute rates that may be spent at once (the token buckets' depth).
    burst_s: float = Field(1.0, gt=0)
    # Exponential backoff with full jitter between retries: base and ceiling, in seconds.
    backoff_s: float = Field(0.5, ge=0)
    max_backoff_s: float = Field(30.0, ge=0)


class Sampling(_Strict):
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(512, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    top_p: float | None = Field(None, gt=0, le=1)


class Resources(_Strict):
    gpus: float = Field(0, ge=0)
    tensor_parallel_size: int = Field(1, ge=1)
    replicas: int = Field(1, ge=1)
    cpus: float = Field(1, ge=0)
    #: Ray custom resources the engine needs on its node, e.g. ``{egress: 1}``: it (and every actor
    #: it starts) runs only on the nodes of a cluster.yaml type that declares them.
    custom: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)


class Chat(_Strict):
    """How prompts become model input: a chat template (a Jinja string, or a file relative to the
    config), a named format (llama.cpp's ``--chat_format``; ``plain`` for vLLM: the turns' text
    without any template), and a system prompt for requests that bring none."""

    template: str | None = None
    format: str | None = None
    system: str | None = None


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    provider: Annotated[str, AfterValidator(ENGINES.known)]  # a name in harness.components.ENGINES (plug-ins too)
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key_env: str | None = None
    price: Price = Field(default_factory=Price)
    limits: Limits = Field(default_factory=Limits)
    sampling: Sampling = Field(default_factory=Sampling)
    resources: Resources = Field(default_factory=Resources)
    chat: Chat = Field(default_factory=Chat)
    engine_args: dict = Field(default_factory=dict)
    # Environment of self-hosted engine processes (e.g. VLLM_CPU_KVCACHE_SPACE); never for keys.
    env: dict[str, str] = Field(default_factory=dict)
    source: str | None = Field(None, exclude=True)  # the file it came from, for messages
    # The key itself, once read on the driver (holding_key): travels with the config to the engine's
    # process, so no other process needs it in its environment. Not a field: never dumped or shown.
    _key: str | None = PrivateAttr(default=None)

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        # The message never repeats the value: it may be a key pasted by mistake.
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError("must name the environment variable that holds the key (e.g. OPENAI_API_KEY), not the key itself")
        if value is not None:
            _KEY_VARIABLES.add(value)
        return value

    @model_validator(mode="after")
    def _provider_needs(self) -> ModelConfig:
        if self.engine.needs_base_url and not self.base_url:
            raise FieldError(("base_url",), f"provider {self.provider} needs base_url (the server's /v1 URL)")
        if self.limits.max_backoff_s < self.limits.backoff_s:
            raise FieldError(("limits", "max_backoff_s"), f"must be at least limits.backoff_s (got {self.limits.max_backoff_s!r})")
        if self.resources.tensor_parallel_size > 1 and self.resources.gpus < self.resources.tensor_parallel_size:
            raise FieldError(("resources", "gpus"), f"must cover resources.tensor_parallel_size (GPUs per replica) (got {self.resources.gpus!r})")
        return self

    def chat_template(self) -> str | None:
        """``chat.template`` as Jinja text: read from a file where it names one."""
        template = self.chat.template
        if not template or "{" in template:
            return template
        path = Path(template).expanduser()
        if not path.is_absolute() and self.source:
            path = Path(self.source).parent / path
        try:
            return path.read_text()
        except OSError as exc:
            raise UserError(f"{self.source or self.name}: field 'chat.template': cannot read {path} ({exc.strerror or exc})") from None

    @property
    def engine(self) -> type:
        """The provider's engine class (:class:`harness.generation.base.Engine`): it declares what the provider needs."""
        return engine_class(self.provider)

    @property
    def self_hosted(self) -> bool:
        return bool(self.engine.self_hosted)

    def api_key(self) -> str | None:
        """The key this config holds (:meth:`holding_key`), else the one ``api_key_env`` names here."""
        if self._key is not None:
            return self._key
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def holding_key(self) -> ModelConfig:
        """A copy that carries its key, read here and now: call it where the key is (the driver,
        before Ray starts), so the engine's process gets it with the config and every other process
        can run without it. A key variable that is unset is a one-line error naming it."""
        if self.api_key_env is None:
            return self
        value = self.api_key()
        if not value:
            raise UserError(f"{self.source or self.name}: field 'api_key_env': environment variable {self.api_key_env} is not set; export it with the key")
        held = self.model_copy()
        held._key = value
        return held

    def config_hash(self, extra: dict | None = None) -> str:
        """Fingerprint of what changes the answers (model, endpoint kind, sampling, chat, engine args),
        not of prices or rate limits, which are re-priced or irrelevant to answers."""
        doc = {
            "provider": self.provider,
            "model": self.model,
            "sampling": self.sampling.model_dump(),
            "chat": self.chat.model_dump(),
            "engine_args": self.engine_args,
            **(extra or {}),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """Read and validate one YAML config; any problem is one line naming the file and the field."""
    return load_record(path, ModelConfig, "model config", _SECRET_FIELDS, {"source": str(path)})


def key_variables() -> set[str]:
    """Names of the variables that hold API keys: every ``api_key_env`` of the configs this process
    loaded and of the shipped ``model_configs/`` (scrubbed from the environment of Ray and graders)."""
    shipped = PACKAGE_ROOT / "model_configs"
    for path in sorted(shipped.glob("*.y*ml")) if shipped.is_dir() else []:
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        name = doc.get("api_key_env") if isinstance(doc, dict) else None
        if isinstance(name, str) and _ENV_NAME.fullmatch(name):
            _KEY_VARIABLES.add(name)
    return set(_KEY_VARIABLES)


def default_models_dir() -> Path:
    """``model_configs/`` in the working directory (a job's working dir), else next to the package."""
    here = Path("model_configs")
    return here if here.is_dir() else PACKAGE_ROOT / "model_configs"


def scan_model_configs(directory: str | os.PathLike | None = None) -> tuple[dict[str, ModelConfig], dict[str, str]]:
    """Every config in a directory that loads, by model name, and the one-line reason each other
    file did not (two files naming the same model: the second is the broken one)."""
    directory = Path(directory) if directory else default_models_dir()
    if not directory.is_dir():
        raise UserError(f"{directory}: no such model config directory")
    configs: dict[str, ModelConfig] = {}
    broken: dict[str, str] = {}
    for path in sorted(directory.glob("*.y*ml")):
        try:
            config = load_model_config(path)
        except UserError as exc:
            broken[str(path)] = str(exc)
            continue
        if config.name in configs:
            broken[str(path)] = f"{path}: model name '{config.name}' is also used by {configs[config.name].source}"
        else:
            configs[config.name] = config
    return configs, broken


def load_model_configs(directory: str | os.PathLike | None = None) -> dict[str, ModelConfig]:
    """Every config in a directory, by model name; any file that does not load is the error."""
    configs, broken = scan_model_configs(directory)
    if broken:
        raise UserError(next(iter(broken.values())))
    return configs
