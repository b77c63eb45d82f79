"""Graders: one per file, each registered by name with a version that goes into the outcome.

``GRADERS.get(name)(**options)`` builds one; plug-ins register under the ``routerbench.graders``
entry-point group. Every grader turns (response, gold, meta) into a typed :class:`Grade`, and a
missing response or gold answer, or a failure of the grader, is an error, never a silent 0.
"""

from harness.grading.base import MISSING_GOLD, MISSING_RESPONSE, Grade, Grader, grade_frame, parse_meta
from harness.registry import Registry

GRADERS: Registry = Registry("grader", entry_point_group="routerbench.graders")
GRADERS.add("multiple-choice", "harness.grading.multiple_choice:MultipleChoiceGrader")
GRADERS.add("math", "harness.grading.math:MathGrader")
GRADERS.add("code-exec", "harness.grading.code_exec:CodeExecGrader")
GRADERS.add("mtbench-judge", "harness.grading.judge:JudgeGrader")
GRADERS.add("exact-match", "harness.grading.exact_match:ExactMatchGrader")


def build_grader(name: str, **options: object) -> Grader:
    """The grader registered as ``name``, constructed with ``options``."""
    return GRADERS.get(name)(**options)  # type: ignore[operator]


__all__ = ["GRADERS", "MISSING_GOLD", "MISSING_RESPONSE", "Grade", "Grader", "build_grader", "grade_frame", "parse_meta"]
