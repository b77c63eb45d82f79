"""Code execution: run a response's Python against the task's tests in the sandbox (MBPP, HumanEval).

The gold answer of a code task is its test program (MBPP's asserts with their imports; HumanEval's
``check`` function and the call ``check(entry_point)``). The grader

1. extracts the code: fenced blocks (```` ```python ```` or untagged; other languages are skipped),
   Code Llama's ``[PYTHON]…[/PYTHON]``, MBPP few-shot's ``[BEGIN]…[DONE]``, else the response
   itself from its first ``def``/``import``;
2. by default keeps only what the tests need: imports, functions, classes, and top-level
   assignments those use — example calls and prints in a response are dropped, since they are not
   part of the answer and may fail or loop;
3. runs ``meta["code_prefix"]`` (HumanEval's signature and imports) + code + tests in the sandbox,
   many at once in a thread pool (each run is its own process).

``bind_entry_point=True`` also binds the name the tests call (``meta["entry_point"]``) to the
response's main function when the response named it differently: a prompt that does not name the
function (RouterBench's 0-shot MBPP) cannot be held to the name, but this is not standard grading.
Passing scores 1; failing, timing out or no code scores 0 (``extracted`` says which); a sandbox
that cannot start is a grader error. Programs run in bubblewrap (:mod:`harness.grading.sandbox`);
where it cannot run, grading refuses unless ``unsafe_sandbox=True``, which uses the weaker process
sandbox, warns on every batch and records ``+unsafe-sandbox`` in the grader's id (a provisional
flag: any run without it grades those outcomes again).
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, ClassVar

from harness.grading.base import Flag, Grade, Grader, GraderOptions, failed
from harness.grading.sandbox import BUBBLEWRAP, PROCESS, SandboxLimits, RunResult, require_bubblewrap, run_python
from harness.ray_runtime import SANDBOX_RESOURCE

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TAGGED = re.compile(r"\[PYTHON\](.*?)(?:\[/PYTHON\]|\Z)|\[BEGIN\](.*?)(?:\[DONE\]|\Z)", re.DOTALL | re.IGNORECASE)
_PY_TAGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(r"^(?:def |class |import |from \S+ import |@)", re.MULTILINE)
_KEEP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def _longest_parsing_prefix(lines: list[str]) -> str | None:
    """Code followed by prose: the longest run of leading lines that is valid Python."""
    for end in range(len(lines), 0, -1):
        code = "\n".join(lines[:end])
        if _parses(code):
            return code
    return None


def code_blocks(response: str) -> list[str]:
    """The Python code blocks of a response, in order."""
    blocks = [body for lang, body in _FENCE.findall(response) if lang.lower() in _PY_TAGS]
    blocks += [a or b for a, b in _TAGGED.findall(response)]
    if blocks or "```" in response:
        return [b for b in blocks if b.strip()]
    start = _CODE_START.search(response)
    if start is None:
        return []
    code = _longest_parsing_prefix(response[start.start() :].splitlines())
    return [code] if code else []


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def sanitize(code: str) -> str:
    """Imports, definitions and the top-level assignments they use; example calls and prints go."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code  # a syntax error is the response's own: run it and let it fail
    kept = [n for n in tree.body if isinstance(n, _KEEP)]
    used = set().union(*(_names_used(n) for n in kept if not isinstance(n, (ast.Import, ast.ImportFrom)))) if kept else set()
    body = []
    for node in tree.body:
        if isinstance(node, _KEEP):
            body.append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in used for tgt in targets for t in ast.walk(tgt)):
                body.append(node)
        elif isinstance(node, ast.Try) and all(isinstance(n, _KEEP) for n in node.body):
            body.append(node)  # try: import x / except ImportError: …
    return ast.unparse(ast.Module(body=body, type_ignores=[]))


def main_function(code: str) -> str | None:
    """The top-level function no other top-level function calls (the last such), for name binding."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    funcs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    called = set().union(*(_names_used(f) - {f.name} for f in funcs)) if funcs else set()
    roots = [f.name for f in funcs if f.name not in called] or [f.name for f in funcs]
    return roots[-1] if roots else None


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(|^{re.escape(name)}\s*=", code, re.MULTILINE) is not None


def build_program(response: str, tests: str, meta: dict, *, keep_examples: bool = False, bind_entry_point: bool = False) -> str | None:
    """The program the sandbox runs, or None when the response holds no Python."""
    prefix = str(meta.get("code_prefix") or "")
    blocks = code_blocks(response)
    if not blocks:
        return None
    parts = []
    for block in blocks:
        if _parses(block):
            parts.append(block if keep_examples else sanitize(block))
        elif prefix and _parses(prefix + block):
            parts.append(prefix + block)  # a function body that continues the prompt's signature
            prefix = ""
        elif "def " in block:
            parts.append(block)  # the answer itself has a syntax error
    code = "\n\n".join(p for p in parts if p.strip())
    if not code.strip():
        return None
    entry = meta.get("entry_point")
    if bind_entry_point and entry and not _defines(prefix + code, entry):
        candidate = main_function(code)
        if candidate:
            code += f"\n\n{entry} = {candidate}\n"
    return f"{prefix}\n{code}\n\n{tests}\n" if prefix else f"{code}\n\n{tests}\n"


def _summary(result: RunResult) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else ""
    return result.status if result.passed or not last else f"{result.status}: {last[:160]}"


UNSAFE_WARNING = "code-exec: --unsafe-sandbox: model-written code runs in the weaker process sandbox (no bubblewrap); do not grade untrusted responses on a machine holding secrets"


class CodeExecOptions(GraderOptions):
    bind_entry_point: Annotated[bool, Flag("bind-name")] = False
    keep_examples: Annotated[bool, Flag("examples")] = False
    unsafe_sandbox: Annotated[bool, Flag("unsafe-sandbox", provisional=True)] = False


class CodeExecGrader(Grader):
    name = "code-exec"
    version = "1"
    # Runs model-written code: on nodes with the sandbox resource, in workers without key variables.
    resources: ClassVar[dict[str, float]] = {SANDBOX_RESOURCE: 1}
    keyless = True
    Options = CodeExecOptions

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        workers: int | None = None,
        *,
        bind_entry_point: bool = False,
        keep_examples: bool = False,
        unsafe_sandbox: bool = False,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.workers = workers or os.cpu_count() or 1
        self.options = CodeExecOptions(bind_entry_point=bind_entry_point, keep_examples=keep_examples, unsafe_sandbox=unsafe_sandbox)
        self.isolation = PROCESS if unsafe_sandbox else BUBBLEWRAP

    @classmethod
    def check_here(cls, options: GraderOptions) -> None:
        if not getattr(options, "unsafe_sandbox", False):
            require_bubblewrap()

    def grade_valid(self, responses: list[str], golds: list[str | None], metas: list[dict]) -> list[Grade]:
        if self.isolation == BUBBLEWRAP:
            require_bubblewrap()
        else:
            warnings.warn(UNSAFE_WARNING, stacklevel=2)
        programs = [
            build_program(str(r), str(g), m, keep_examples=self.options.keep_examples, bind_entry_point=self.options.bind_entry_point)
            for r, g, m in zip(responses, golds, metas)
        ]
        todo = [i for i, p in enumerate(programs) if p is not None]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            results = dict(zip(todo, pool.map(lambda i: run_python(programs[i], self.limits, isolation=self.isolation), todo)))  # type: ignore[arg-type]
        grades = []
        for i in range(len(programs)):
            result = results.get(i)
            if result is None:
                grades.append(Grade(0.0, None, "no-code"))
            elif result.status == "sandbox-error":
                grades.append(failed(_summary(result)))
            else:
                grades.append(Grade(float(result.passed), None, _summary(result)))
        return grades
