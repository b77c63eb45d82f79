"""The code-execution grader: code extraction, MBPP/HumanEval programs, grades, run in parallel."""

from __future__ import annotations


from harness.grading import build_grader
from harness.grading.code_exec import build_program, code_blocks, main_function, sanitize
from harness.grading.sandbox import SandboxLimits
from tests.conftest import needs_bubblewrap

pytestmark = needs_bubblewrap

TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0"
CHATTY = """Here is a function that adds two numbers:

```python
def add(a, b):
    return a + b

# Example usage
print(add(2, 3))
```

And in JavaScript:

```javascript
function add(a, b) { return a + b; }
```
"""


def test_code_blocks_from_fences_tags_and_bare_code() -> None:
    assert code_blocks(CHATTY) == ["def add(a, b):\n    return a + b\n\n# Example usage\nprint(add(2, 3))\n"]
    assert code_blocks("[PYTHON]\ndef add(a, b):\n    return a + b\n[/PYTHON]\n[TESTS]\nassert add(1, 1) == 2\n[/TESTS]") == ["\ndef add(a, b):\n    return a + b\n"]
    bare = "Sure:\ndef add(a, b):\n    return a + b\nThis adds the numbers."
    assert code_blocks(bare) == ["def add(a, b):\n    return a + b"]
    assert code_blocks("```js\nlet x = 1\n```") == []
    assert code_blocks("No code here, sorry.") == []
    assert code_blocks("```python\ndef f():\n    return 1") == ["def f():\n    return 1"]  # a reply cut off mid-block


def test_sanitize_keeps_definitions_and_what_they_use() -> None:
    code = "import re\nPATTERN = re.compile('a')\nUNUSED = 3\ndef f(s):\n    return PATTERN.sub('', s)\nprint(f('abc'))\nf('x')\nfor i in range(10**9):\n    pass"
    kept = sanitize(code)
    assert "PATTERN = re.compile" in kept and "def f" in kept and "import re" in kept
    assert "print" not in kept and "UNUSED" not in kept and "range" not in kept


def test_main_function_and_name_binding() -> None:
    code = "def helper(x):\n    return x * 2\n\ndef double_all(xs):\n    return [helper(x) for x in xs]"
    assert main_function(code) == "double_all"
    meta = {"entry_point": "map_double"}
    program = build_program(f"```python\n{code}\n```", "assert map_double([1]) == [2]", meta, bind_entry_point=True)
    assert program is not None and "map_double = double_all" in program
    assert "map_double = " not in (build_program(f"```python\n{code}\n```", "", meta) or "")


def test_grades_for_hand_made_responses() -> None:
    grader = build_grader("code-exec", limits=SandboxLimits(wall_s=60, cpu_s=2), workers=4)  # the CPU limit stops the loop; the wall clock only bounds a stuck run
    responses = [
        CHATTY,  # right, with an example and another language around it
        "```python\ndef add(a, b):\n    return a - b\n```",  # wrong
        "I cannot help with that.",  # no code
        "```python\ndef add(a, b)\n    return a + b\n```",  # syntax error
        "```python\ndef add(a, b):\n    while True:\n        pass\n```",  # never returns
        "```python\ndef plus(a, b):\n    return a + b\n```",  # right but another name
        None,
        "```python\ndef add(a, b):\n    return a + b\n```",
    ]
    golds = [TESTS] * 6 + [TESTS, None]
    grades = grader.grade_batch(responses, golds, [{"entry_point": "add"}] * 8)
    assert [g.score for g in grades] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, None]
    assert grades[1].extracted.startswith("failed: AssertionError")
    assert grades[2].extracted == "no-code"
    assert "SyntaxError" in grades[3].extracted
    assert grades[4].extracted.startswith("killed")
    assert "NameError" in grades[5].extracted
    assert grades[6].error == "response:missing" and grades[7].error == "gold:missing"
    bound = build_grader("code-exec", bind_entry_point=True).grade_batch([responses[5]], [TESTS], [{"entry_point": "add"}])
    assert bound[0].score == 1.0 and build_grader("code-exec", bind_entry_point=True).id == "code-exec@1+bind-name"


def test_humaneval_style_prefix_and_body_only_answers() -> None:
    prefix = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum of xs."""\n'
    tests = "def check(candidate):\n    assert candidate([1, 2, 3]) == 6\n\ncheck(total)\n"
    meta = {"code_prefix": prefix, "entry_point": "total"}
    whole = "```python\nfrom typing import List\n\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    body = "```python\n    return sum(xs)\n```"
    grades = build_grader("code-exec").grade_batch([whole, body, "```python\n    return 0\n```"], [tests] * 3, [meta] * 3)
    assert [g.score for g in grades] == [1.0, 1.0, 0.0]


def test_runs_in_parallel(monkeypatch) -> None:
    """Counted, not timed: how many sandboxed runs were in flight at once (a busy machine slows
    each run, not the overlap)."""
    import threading

    from harness.grading import code_exec

    lock, in_flight, peak = threading.Lock(), [0], [0]
    real = code_exec.run_python

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(code_exec, "run_python", counting)
    slow = "```python\nimport time\ndef add(a, b):\n    time.sleep(0.5)\n    return a + b\n```"
    grades = build_grader("code-exec", workers=8).grade_batch([slow] * 8, [TESTS] * 8, [{}] * 8)
    assert all(g.score == 1.0 for g in grades)
    assert peak[0] >= 4  # 8 workers; each run sleeps 0.5 s, so the pool overlaps them
