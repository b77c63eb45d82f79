"""Providers: the engine class a model config's ``provider`` names, found in one registry.

Built-in engines are registered here as ``module:Class`` strings, so validating a config imports no
SDK; plug-ins add theirs under the ``routerbench.engines`` entry-point group. What a provider *is*
(self-hosted or an API, whether it needs a key or a ``base_url``, its batch size, the Ray resources
its stage needs) is an attribute of its engine class (:class:`harness.generation.base.Engine`),
never a list of names kept elsewhere.
"""

from __future__ import annotations

from harness.errors import UserError
from harness.registry import Registry

ENGINES: Registry = Registry("provider", entry_point_group="routerbench.engines")
for _provider, _spec in {
    "openai": "harness.generation.openai_engine:OpenAIEngine",
    "openai_compatible": "harness.generation.openai_engine:OpenAICompatibleEngine",
    "anthropic": "harness.generation.anthropic_engine:AnthropicEngine",
    "vllm": "harness.generation.vllm_engine:VLLMEngine",
    "llama_cpp": "harness.generation.llama_cpp_engine:LlamaCppEngine",
}.items():
    ENGINES.add(_provider, _spec)


#: What every engine class declares (see :class:`harness.generation.base.Engine`).
DECLARED = ("stream", "self_hosted", "needs_key", "needs_base_url", "batch_size", "stage_resources")


def engine_class(provider: str) -> type:
    """The engine class registered for a provider name (built-in or an entry-point plug-in)."""
    cls = ENGINES.get(provider)
    if not (isinstance(cls, type) and all(hasattr(cls, attr) for attr in DECLARED)):
        raise UserError(f"provider '{provider}' is registered as {cls!r}, which is not a harness.generation.base.Engine subclass")
    return cls
