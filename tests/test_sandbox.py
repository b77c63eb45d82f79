"""The code sandbox: model-written code cannot escape its directory, reach the network, fork-bomb
or run past its limits. Each layer is tried with the interpreter guard on (the default) and, where
this machine grants the OS-level layer, with the guard off, so each layer is shown to hold alone;
both isolations (bubblewrap, and the weaker process sandbox of ``--unsafe-sandbox``) are covered.
The attacks of a hostile user are in test_sandbox_hostile.py."""

from __future__ import annotations

import ast
import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from harness.grading.sandbox import BUBBLEWRAP, PROCESS, RunResult, SandboxLimits, capabilities, run_python
from tests.conftest import needs_bubblewrap

FAST = SandboxLimits(wall_s=30, cpu_s=2, memory_mb=512, max_procs=16)  # a generous wall clock: a busy 2-core machine must not fail legitimate runs
caps = capabilities()
ISOLATIONS = [pytest.param(BUBBLEWRAP, marks=needs_bubblewrap), PROCESS]
#: Ends a test whose run hangs, and nothing else: every bound the tests assert is a status, a signal,
#: the program's own CPU time or an event, so a loaded machine only makes them slower, never wrong.
SAFETY_S = 300
#: A busy loop that reports its own CPU time (``time.process_time``, what RLIMIT_CPU counts) every
#: 50 ms of it: the last report in its output says how much CPU it had used when it was stopped.
SPIN = "import time\nlast = 0.0\nwhile True:\n    t = time.process_time()\n    if t - last >= 0.05:\n        print(f'cpu {t:.3f}', flush=True)\n        last = t"
#: Sleeps far longer than SAFETY_S: a run that lasted as long as the program would fail the test.
LONG_SLEEP = "import time\ntime.sleep(3600)"


def cpu_when_stopped(output: str) -> float:
    """The last CPU time SPIN reported before it was stopped."""
    reports = re.findall(r"^cpu (\d+\.\d+)$", output, flags=re.MULTILINE)
    assert reports, output[-300:]
    return float(reports[-1])


def stopped_by_the_cpu_limit(result: RunResult, cpu_s: int) -> bool:
    """SPIN was killed by RLIMIT_CPU: a signal (not the wall clock, whose status is ``timeout``), the
    one that limit sends (SIGKILL at the hard limit, which equals the soft one; SIGXCPU otherwise),
    after it had used its CPU budget and not much more (a limit set too high or never applied fails)."""
    return (
        result.status == "killed"
        and result.returncode in (-signal.SIGKILL, -signal.SIGXCPU)
        and cpu_s - 0.2 <= cpu_when_stopped(result.output) <= cpu_s + 0.2
    )


def run_in_time(source: str, limits: SandboxLimits, **kwargs: object) -> RunResult:
    """``run_python`` that fails the test, instead of hanging it, if the run outlives SAFETY_S."""
    box: list[RunResult] = []
    thread = threading.Thread(target=lambda: box.append(run_python(source, limits, **kwargs)), daemon=True)
    thread.start()
    thread.join(SAFETY_S)
    assert box, f"the run did not end within {SAFETY_S} s: its timeout did not stop the program"
    return box[0]


def sleep_token() -> str:
    """A unique length for ``/bin/sleep``, far past SAFETY_S: findable in the host's process list, and
    a sleep with it gone before the wait's end is one the run's end killed."""
    return f"3600.{uuid.uuid4().int % 10**9:09d}"


#: Three children that leave the session and become ``sleep {token}``; the program ends (and prints
#: their PIDs) only once all three are sleeping, so a test of their end is never vacuous.
SLEEPERS = """import os, time
pids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.execv('/bin/sleep', ['sleep', '{token}'])
    pids.append(pid)
while not all(b'{token}' in open(f'/proc/{{p}}/cmdline', 'rb').read() for p in pids):
    time.sleep(0.01)
print(pids)"""


def sleepers(token: str) -> list[int]:
    """The live processes (a zombie has no command line) whose command line holds ``token``."""
    found = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and token.encode() in (p / "cmdline").read_bytes():
                found.append(int(p.name))
        except OSError:
            pass
    return found


def wait_until_gone(token: str) -> list[int]:
    """Poll until no sleeper with ``token`` is alive (a state, not a time), for at most SAFETY_S; the
    ones still alive then are killed (so a failing test leaves nothing behind) and returned."""
    deadline = time.monotonic() + SAFETY_S
    while sleepers(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = sleepers(token)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_passing_program_passes_and_a_failing_one_fails(isolation: str) -> None:
    assert run_python("assert sorted([3, 1, 2]) == [1, 2, 3]\nprint('ok')", FAST, isolation=isolation).status == "passed"
    failed = run_python("assert 1 == 2", FAST, isolation=isolation)
    assert failed.status == "failed" and "AssertionError" in failed.output


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_sandbox_that_cannot_start_is_not_the_programs_failure(isolation: str) -> None:
    from harness.grading import build_grader

    never = SandboxLimits(wall_s=0.001)  # over before the interpreter is up: the program never ran
    assert run_python("print(1)", never, isolation=isolation).status == "sandbox-error"
    grade = build_grader("code-exec", limits=never, unsafe_sandbox=isolation == PROCESS).grade_batch(["```python\ndef f():\n    return 1\n```"], ["assert f() == 1"])[0]
    assert grade.score is None and grade.error.startswith("grader:sandbox-error") and "\n" not in grade.error


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_an_early_exit_is_not_a_pass(isolation: str) -> None:
    for code in ("import sys; sys.exit(0)", "exit()", "raise SystemExit", "import os; os._exit(0)"):
        assert run_python(code + "\nassert False", FAST, isolation=isolation).status == "failed", code


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_it_runs_in_a_fresh_private_directory(isolation: str) -> None:
    code = "import os, tempfile\nleft = os.path.exists('x.txt')\nopen('x.txt', 'w').write('hi')\nprint(os.getcwd(), os.environ['HOME'], tempfile.gettempdir(), left, sorted(os.listdir('.')))"
    first, second = run_python(code, FAST, isolation=isolation), run_python(code, FAST, isolation=isolation)
    assert first.passed and second.passed
    cwd, home, tmp, left, listing = first.output.split(" ", 4)
    assert cwd == home == tmp and left == "False" and second.output.split(" ")[3] == "False"  # nothing of an earlier run
    assert "x.txt" in listing and "main.py" in listing
    if isolation == BUBBLEWRAP:
        assert cwd == "/sandbox"  # a tmpfs that exists only inside
    else:
        assert Path(cwd).name.startswith("rb-sandbox-") and first.output != second.output and not Path(cwd).exists()


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("guard", [True, False])
def test_cannot_write_outside_its_directory(tmp_path: Path, guard: bool, isolation: str) -> None:
    if not guard and isolation == PROCESS and not caps.mount_namespace:
        pytest.skip("no private mount namespace here: only the interpreter guard stops writes")
    target = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    for code in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os; os.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))",
        f"import pathlib; pathlib.Path({str(target)!r}).write_text('x')",
        f"import os; os.symlink('/tmp', 'link'); open('link/{target.name}', 'w').write('x')",
        f"import shutil; open('a', 'w').write('x'); shutil.copyfile('a', {str(target)!r})",
    ):
        result = run_python(code, FAST, guard=guard, isolation=isolation)
        assert result.status == "failed", code
        assert not target.exists(), code


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_cannot_read_or_list_outside_its_directory(tmp_path: Path, isolation: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    for code in (f"print(open({str(secret)!r}).read())", f"import os; print(os.listdir({str(tmp_path)!r}))", "print(open('/etc/hostname').read())"):
        result = run_python(code, FAST, isolation=isolation)
        assert result.status == "failed" and "top secret" not in result.output and "outside the sandbox" in result.output, code


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_can_import_the_standard_library_and_installed_packages(isolation: str) -> None:
    code = "import re, math, heapq, collections, itertools, functools, fractions, decimal, datetime, json, numpy\nprint(numpy.arange(3).sum())"
    result = run_python(code, FAST, isolation=isolation)
    assert result.passed and result.output.strip() == "3"


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("guard", [True, False])
def test_cannot_open_sockets(guard: bool, isolation: str) -> None:
    if not guard and isolation == PROCESS and not caps.network_namespace:
        pytest.skip("no network namespace here: only the interpreter guard stops sockets")
    code = "import socket\ns = socket.create_connection(('1.1.1.1', 53), timeout=2)\nprint('connected')"
    result = run_python(code, FAST, guard=guard, isolation=isolation)
    assert result.status == "failed" and "connected" not in result.output
    assert ("not allowed" in result.output) if guard else ("unreachable" in result.output.lower() or "Errno" in result.output)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_cannot_start_processes_or_load_native_code(isolation: str) -> None:
    for code in (
        "import os; os.fork()",
        "import subprocess; subprocess.run(['true'])",
        "import os; os.system('true')",
        "import os; os.execv('/bin/true', ['true'])",
        "import ctypes",
        "import os, signal; os.kill(os.getppid(), signal.SIGTERM)",
        "import resource; resource.setrlimit(resource.RLIMIT_CPU, (100, 100))",
    ):
        result = run_python(code, FAST, isolation=isolation)
        assert result.status == "failed" and ("not allowed" in result.output), code


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_fork_bomb_is_contained(isolation: str) -> None:
    bomb = "import os\nwhile True:\n    os.fork()"
    result = run_python(bomb, FAST, isolation=isolation)
    assert result.status == "failed" and "os.fork is not allowed" in result.output
    # refused at the first fork: the program ended by itself on that one PermissionError (exit 1, not
    # a kill by a limit nor the wall clock), and no copy of it lived to be refused a fork too
    assert result.returncode == 1 and result.output.count("os.fork is not allowed") == 1, result.output[-500:]


@needs_bubblewrap
@pytest.mark.skipif(caps.pids_cgroup is None and not caps.nproc_rlimit, reason="neither a pids cgroup nor RLIMIT_NPROC applies here (root without cgroups)")
def test_a_fork_bomb_is_contained_by_the_os_alone() -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_python(bomb, SandboxLimits(wall_s=10, cpu_s=1, max_procs=8), guard=False)  # 10 s: time for the interpreter to start under load
    assert result.status in ("timeout", "killed")
    assert run_python("print('still fine')", FAST).passed  # and the machine is still usable


def test_processes_that_leave_the_group_are_killed_too() -> None:
    """The process isolation (host PIDs; bubblewrap's PID namespace is tested in test_sandbox_hostile.py)."""
    if caps.pids_cgroup is None:
        pytest.skip("without a pids cgroup a child that calls setsid() escapes the process-group kill")
    token = sleep_token()
    result = run_python(SLEEPERS.format(token=token), FAST, guard=False, isolation=PROCESS)
    assert result.passed
    assert len(ast.literal_eval(result.output.strip().splitlines()[-1])) == 3  # three children left the group
    assert not wait_until_gone(token)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_infinite_loops_and_sleeps_are_stopped(isolation: str) -> None:
    # the wall clock only ends the run if the CPU limit does not: generous, so load never reaches it
    busy = run_in_time(SPIN, SandboxLimits(wall_s=120, cpu_s=1), isolation=isolation)
    assert stopped_by_the_cpu_limit(busy, 1), (busy.status, busy.returncode, busy.output[-300:])
    # the wall clock covers the interpreter's start too (no start in time is a sandbox-error): ample,
    # so a loaded machine still gets to the program; the run then ends at the timeout, not the program's end
    asleep = run_in_time(LONG_SLEEP, SandboxLimits(wall_s=10, cpu_s=5), isolation=isolation)
    assert asleep.status == "timeout" and asleep.returncode is None and asleep.seconds >= 10, asleep


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_memory_hogs_are_stopped(isolation: str) -> None:
    result = run_python("x = bytearray(2 * 1024**3)", SandboxLimits(memory_mb=256), isolation=isolation)
    assert result.status == "failed" and "MemoryError" in result.output
    grow = run_python("x = []\nwhile True:\n    x.append(' ' * 10**6)", SandboxLimits(memory_mb=256, cpu_s=5, wall_s=60), isolation=isolation)
    # stopped by the memory limit: the program's own MemoryError ended it (exit 1), neither the CPU
    # limit (a signal) nor the wall clock (timeout)
    assert grow.status == "failed" and grow.returncode == 1 and "MemoryError" in grow.output, (grow.status, grow.returncode, grow.output[-300:])


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_output_floods_are_capped(isolation: str) -> None:
    result = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", SandboxLimits(file_mb=1, cpu_s=5, wall_s=10), isolation=isolation)
    assert result.status in ("failed", "killed") and len(result.output) <= 5000


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_no_sandbox_state_is_left_behind(isolation: str) -> None:
    import tempfile

    run_python("open('x', 'w').write('y')", FAST, isolation=isolation)
    run_python("import time\ntime.sleep(60)", SandboxLimits(wall_s=0.5), isolation=isolation)
    mine = f"{os.getpid()}-"
    assert not [p for p in Path(tempfile.gettempdir()).glob(f"rb-sandbox-{mine}*")]
    if caps.pids_cgroup:
        assert not [p for p in Path(caps.pids_cgroup).glob(f"{mine}*")]
