"""The registries of named components that other layers name by string: providers and graders.

Built-ins are registered as ``module:Class`` strings, so naming or validating one (a model config's
``provider``, a task family's ``grader``) imports neither the component nor its SDK, and this module
sits below every layer that names them; plug-ins add theirs under the ``routerbench.engines`` and
``routerbench.graders`` entry-point groups. What a component *is* is declared on its class (an
engine's :class:`harness.generation.base.Engine` attributes, a grader's
:class:`harness.grading.base.Grader` ones), never in lists kept elsewhere.
"""

from __future__ import annotations

from harness.errors import UserError
from harness.registry import Registry

ENGINES: Registry = Registry(
    "provider",
    entry_point_group="routerbench.engines",
    built_in={
        "openai": "harness.generation.openai_engine:OpenAIEngine",
        "openai_compatible": "harness.generation.openai_engine:OpenAICompatibleEngine",
        "anthropic": "harness.generation.anthropic_engine:AnthropicEngine",
        "vllm": "harness.generation.vllm_engine:VLLMEngine",
        "llama_cpp": "harness.generation.llama_cpp_engine:LlamaCppEngine",
    },
)
GRADERS: Registry = Registry(
    "grader",
    entry_point_group="routerbench.graders",
    built_in={
        "multiple-choice": "harness.grading.multiple_choice:MultipleChoiceGrader",
        "math": "harness.grading.math:MathGrader",
        "code-exec": "harness.grading.code_exec:CodeExecGrader",
        "mtbench-judge": "harness.grading.judge:JudgeGrader",
        "exact-match": "harness.grading.exact_match:ExactMatchGrader",
    },
)


#: What every engine class declares (see :class:`harness.generation.base.Engine`).
DECLARED = ("stream", "self_hosted", "needs_key", "needs_base_url", "batch_size", "stage_resources")


def engine_class(provider: str) -> type:
    """The engine class registered for a provider name (built-in or an entry-point plug-in)."""
    cls = ENGINES.get(provider)
    if not (isinstance(cls, type) and all(hasattr(cls, attr) for attr in DECLARED)):
        raise UserError(f"provider '{provider}' is registered as {cls!r}, which is not a harness.generation.base.Engine subclass")
    return cls
