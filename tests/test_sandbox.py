"""The code sandbox: model-written code cannot escape its directory, reach the network, fork-bomb
or run past its limits. Each layer is tried with the interpreter guard on (the default) and, where
this machine grants the OS-level layer, with the guard off, so each layer is shown to hold alone."""

from __future__ import annotations

import ast
import os
import time
import uuid
from pathlib import Path

import pytest

from harness.grading.sandbox import Limits, capabilities, run_python

FAST = Limits(wall_s=5, cpu_s=2, memory_mb=512, max_procs=16)
caps = capabilities()


def test_a_passing_program_passes_and_a_failing_one_fails() -> None:
    assert run_python("assert sorted([3, 1, 2]) == [1, 2, 3]\nprint('ok')", FAST).status == "passed"
    failed = run_python("assert 1 == 2", FAST)
    assert failed.status == "failed" and "AssertionError" in failed.output


def test_a_sandbox_that_cannot_start_is_not_the_programs_failure() -> None:
    from harness.grading import build_grader

    assert run_python("print(1)", Limits(memory_mb=5)).status == "sandbox-error"  # too little memory for the bootstrap
    grade = build_grader("code-exec", limits=Limits(memory_mb=5)).grade_batch(["```python\ndef f():\n    return 1\n```"], ["assert f() == 1"])[0]
    assert grade.score is None and grade.error.startswith("grader:sandbox-error") and "\n" not in grade.error


def test_an_early_exit_is_not_a_pass() -> None:
    for code in ("import sys; sys.exit(0)", "exit()", "raise SystemExit"):
        assert run_python(code + "\nassert False", FAST).status == "failed", code


def test_it_runs_in_a_fresh_private_directory() -> None:
    code = "import os, tempfile\nopen('x.txt', 'w').write('hi')\nprint(os.getcwd(), os.environ['HOME'], tempfile.gettempdir(), sorted(os.listdir('.')))"
    first, second = run_python(code, FAST), run_python(code, FAST)
    assert first.passed and second.passed
    cwd, home, tmp, listing = first.output.split(" ", 3)
    assert cwd == home == tmp and Path(cwd).name.startswith("rb-sandbox-")
    assert first.output != second.output  # another directory each run
    assert not Path(cwd).exists()  # removed afterwards
    assert "x.txt" in listing and "main.py" in listing


@pytest.mark.parametrize("guard", [True, False])
def test_cannot_write_outside_its_directory(tmp_path: Path, guard: bool) -> None:
    if not guard and not caps.mount_namespace:
        pytest.skip("no private mount namespace here: only the interpreter guard stops writes")
    target = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    for code in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os; os.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))",
        f"import pathlib; pathlib.Path({str(target)!r}).write_text('x')",
        f"import os; os.symlink('/tmp', 'link'); open('link/{target.name}', 'w').write('x')",
        f"import shutil; open('a', 'w').write('x'); shutil.copyfile('a', {str(target)!r})",
    ):
        result = run_python(code, FAST, guard=guard)
        assert result.status == "failed", code
        assert not target.exists(), code


def test_cannot_read_or_list_outside_its_directory(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    for code in (f"print(open({str(secret)!r}).read())", f"import os; print(os.listdir({str(tmp_path)!r}))", "print(open('/etc/hostname').read())"):
        result = run_python(code, FAST)
        assert result.status == "failed" and "top secret" not in result.output and "outside the sandbox" in result.output, code


def test_can_import_the_standard_library_and_installed_packages() -> None:
    code = "import re, math, heapq, collections, itertools, functools, fractions, decimal, datetime, json, numpy\nprint(numpy.arange(3).sum())"
    result = run_python(code, FAST)
    assert result.passed and result.output.strip() == "3"


@pytest.mark.parametrize("guard", [True, False])
def test_cannot_open_sockets(guard: bool) -> None:
    if not guard and not caps.network_namespace:
        pytest.skip("no network namespace here: only the interpreter guard stops sockets")
    code = "import socket\ns = socket.create_connection(('1.1.1.1', 53), timeout=2)\nprint('connected')"
    result = run_python(code, FAST, guard=guard)
    assert result.status == "failed" and "connected" not in result.output
    assert ("not allowed" in result.output) if guard else ("unreachable" in result.output.lower() or "Errno" in result.output)


def test_cannot_start_processes_or_load_native_code() -> None:
    for code in (
        "import os; os.fork()",
        "import subprocess; subprocess.run(['true'])",
        "import os; os.system('true')",
        "import os; os.execv('/bin/true', ['true'])",
        "import ctypes",
        "import os, signal; os.kill(os.getppid(), signal.SIGTERM)",
        "import resource; resource.setrlimit(resource.RLIMIT_CPU, (100, 100))",
    ):
        result = run_python(code, FAST)
        assert result.status == "failed" and ("not allowed" in result.output), code


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_a_fork_bomb_is_contained() -> None:
    bomb = "import os\nwhile True:\n    os.fork()"
    started = time.monotonic()
    result = run_python(bomb, FAST)
    assert result.status == "failed" and "os.fork is not allowed" in result.output
    assert time.monotonic() - started < 5


@pytest.mark.skipif(caps.pids_cgroup is None and not caps.nproc_rlimit, reason="neither a pids cgroup nor RLIMIT_NPROC applies here (root without cgroups)")
def test_a_fork_bomb_is_contained_by_the_os_alone() -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_python(bomb, Limits(wall_s=2, cpu_s=1, max_procs=8), guard=False)
    assert result.status in ("timeout", "killed")
    assert run_python("print('still fine')", FAST).passed  # and the machine is still usable


def test_processes_that_leave_the_group_are_killed_too() -> None:
    if caps.pids_cgroup is None:
        pytest.skip("without a pids cgroup a child that calls setsid() escapes the process-group kill")
    code = "import os, time\npids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n        os.setsid(); time.sleep(60); os._exit(0)\n    pids.append(pid)\nprint(pids)"
    result = run_python(code, FAST, guard=False)
    assert result.passed
    pids = ast.literal_eval(result.output.strip().splitlines()[-1])
    deadline = time.monotonic() + 2
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def test_infinite_loops_and_sleeps_are_stopped() -> None:
    busy = run_python("while True:\n    pass", Limits(wall_s=10, cpu_s=1))
    assert busy.status == "killed" and busy.seconds < 5  # the CPU limit, well before the wall clock
    asleep = run_python("import time\ntime.sleep(60)", Limits(wall_s=1, cpu_s=5))
    assert asleep.status == "timeout" and asleep.seconds < 3


def test_memory_hogs_are_stopped() -> None:
    result = run_python("x = bytearray(2 * 1024**3)", Limits(memory_mb=256))
    assert result.status == "failed" and "MemoryError" in result.output
    grow = run_python("x = []\nwhile True:\n    x.append(' ' * 10**6)", Limits(memory_mb=256, cpu_s=5, wall_s=10))
    assert grow.status in ("failed", "killed") and grow.seconds < 10


def test_output_floods_are_capped() -> None:
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", Limits(file_mb=1, cpu_s=5, wall_s=10))
    assert result.status in ("failed", "killed") and len(result.output) <= 5000


def test_no_sandbox_state_is_left_behind() -> None:
    import tempfile

    run_python("open('x', 'w').write('y')", FAST)
    run_python("import time\ntime.sleep(60)", Limits(wall_s=0.5))
    mine = f"{os.getpid()}-"
    assert not [p for p in Path(tempfile.gettempdir()).glob(f"rb-sandbox-{mine}*")]
    if caps.pids_cgroup:
        assert not [p for p in Path(caps.pids_cgroup).glob(f"{mine}*")]
