"""Hostile code against the real bubblewrap sandbox: each program tries to reach a goal (a secret,
a host file, a listener, the grader) and asserts that it did, so a sandbox that holds makes it a
*failing* program; the test then checks from outside that the goal was not reached (the listener
heard nothing, the host file is not there, the decoy is alive) and that the grader is unharmed.

Each attack runs twice: with the interpreter's audit hook (the default) and without it, so the
bubblewrap layer is shown to hold on its own. A "decoy" process started by the test stands for
the grader's relatives: it holds a secret in its environment, as a process with an API key would.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from harness.grading import build_grader
from harness.grading.sandbox import SandboxLimits, capabilities, run_python
from tests.conftest import needs_bubblewrap
from tests.test_sandbox import LONG_SLEEP, SLEEPERS, SPIN, run_in_time, sleep_token, stopped_by_the_cpu_limit, wait_until_gone

caps = capabilities()
pytestmark = needs_bubblewrap
FAST = SandboxLimits(wall_s=30, cpu_s=4, memory_mb=512, file_mb=4, max_procs=16)  # generous wall clock: load must not fail a legitimate run
SECRET_PREFIX = "rb-secret-"  # what the attacks look for; the whole secret is never in their source
SECRET = f"{SECRET_PREFIX}{uuid.uuid4().hex}"


class Listener:
    """TCP, UDP, abstract and filesystem Unix sockets on this machine that record whatever reaches them."""

    def __init__(self, tmp: Path) -> None:
        self.heard: list[str] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.abstract_name = f"\0rb-hostile-{uuid.uuid4().hex}"
        self.abstract = socket.socket(socket.AF_UNIX)
        self.abstract.bind(self.abstract_name)
        self.abstract.listen()
        self.path = str(tmp / "grader.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.path)
        self.unix.listen()
        for s in (self.tcp, self.udp, self.abstract, self.unix):
            s.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            for name, s in (("tcp", self.tcp), ("abstract", self.abstract), ("unix", self.unix)):
                try:
                    conn, _ = s.accept()
                    self.heard.append(name)
                    conn.sendall(b"ok")
                    conn.close()
                except OSError:
                    pass
            try:
                _, addr = self.udp.recvfrom(64)
                self.heard.append("udp")
                self.udp.sendto(b"ok", addr)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for s in (self.tcp, self.udp, self.abstract, self.unix):
            s.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """What an attacker would go for: a decoy with a secret in its environment, a store, a
    ~/.routerbench file, listeners, and a host directory to write into."""
    tmp = tmp_path_factory.mktemp("hostile")
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env={"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": SECRET})
    store = tmp / "store"
    store.mkdir()
    (store / "outcomes.parquet").write_text(SECRET)
    home_dir = Path.home() / ".routerbench"
    home_dir.mkdir(exist_ok=True)
    home_file = home_dir / f"hostile-probe-{uuid.uuid4().hex}"
    home_file.write_text(SECRET)
    listener = Listener(tmp)
    host_init = Path("/proc/1/cmdline").read_bytes().split(b"\0")[0].decode()
    try:
        yield {
            "tmp": tmp, "decoy": decoy, "store_file": store / "outcomes.parquet", "home_file": home_file,
            "listener": listener, "host_init": host_init,
        }  # fmt: skip
    finally:
        listener.close()
        decoy.kill()
        decoy.wait()
        home_file.unlink(missing_ok=True)


def _exfil(world: dict, name: str) -> Path:
    return world["tmp"] / f"exfil-{name}"


def _payload_sh(world: dict, name: str) -> str:
    """A shell command that would copy the decoy's environment and /etc/shadow to a host file."""
    return f"cat /proc/{world['decoy'].pid}/environ /etc/shadow > {_exfil(world, name)} 2>/dev/null"


def _attacks(world: dict) -> dict[str, str]:
    pid = world["decoy"].pid
    sh = lambda name: repr(_payload_sh(world, name))  # noqa: E731
    out = lambda name: repr(str(_exfil(world, name)))  # noqa: E731
    lst = world["listener"]
    check = lambda name: f"\nassert {SECRET_PREFIX!r} in open({out(name)}).read()\n"  # noqa: E731
    return {
        "read /etc/shadow": "assert 'root:' in open('/etc/shadow').read()",
        "read /proc/*/environ": (
            "import os\nfound = []\nfor p in [d for d in os.listdir('/proc') if d.isdigit()] + [str(%d)]:\n"
            "    try:\n        found.append(%r in open(f'/proc/{p}/environ').read())\n    except OSError:\n        pass\n"
            "assert any(found)"
        ) % (pid, SECRET_PREFIX),
        "read /proc/1/cmdline": f"assert {world['host_init']!r} in open('/proc/1/cmdline').read()",
        "read the store": f"assert {SECRET_PREFIX!r} in open({str(world['store_file'])!r}).read()",
        "read ~/.routerbench": f"assert {SECRET_PREFIX!r} in open({str(world['home_file'])!r}).read()",
        "list the host's users": "import pwd\nassert 'root' in [p.pw_name for p in pwd.getpwall()]",
        "spawn: subprocess": f"import subprocess\nsubprocess.run(['/bin/sh', '-c', {sh('subprocess')}])" + check("subprocess"),
        "spawn: os.system": f"import os\nos.system({sh('system')})" + check("system"),
        "spawn: os.exec": f"import os\nos.execv('/bin/sh', ['sh', '-c', {sh('exec')} + '; exit 0'])",
        "spawn: os.posix_spawn": f"import os\npid = os.posix_spawn('/bin/sh', ['sh', '-c', {sh('posix_spawn')}], {{}})\nos.waitpid(pid, 0)" + check("posix_spawn"),
        "spawn: os.fork": (
            f"import os\npid = os.fork()\nif pid == 0:\n    os.execv('/bin/sh', ['sh', '-c', {sh('fork')}])\nos.waitpid(pid, 0)" + check("fork")
        ),
        "spawn: _posixsubprocess.fork_exec": (
            "import _posixsubprocess, os\n"
            f"args = [b'/bin/sh', b'-c', {_payload_sh(world, 'fork_exec').encode()!r}]\n"
            "r, w = os.pipe()\n"
            "common = (args, [args[0]], True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, True, False)\n"
            "try:\n    pid = _posixsubprocess.fork_exec(*common, -1, None, None, None, -1, None, False)\n"
            "except TypeError:\n    pid = _posixsubprocess.fork_exec(*common, -1, None, None, None, -1, None)\n"
            "os.waitpid(pid, 0)" + check("fork_exec")
        ),
        "spawn: ctypes libc system": f"import ctypes\nctypes.CDLL(None).system({_payload_sh(world, 'ctypes').encode()!r})" + check("ctypes"),
        "spawn: multiprocessing": (
            f"import multiprocessing, os\ndef leak():\n    os.system({sh('multiprocessing')})\n"
            "if __name__ == '__main__':\n    p = multiprocessing.get_context('fork').Process(target=leak)\n    p.start()\n    p.join()" + check("multiprocessing")
        ),
        "tcp to 127.0.0.1": f"import socket\ns = socket.create_connection(('127.0.0.1', {lst.tcp.getsockname()[1]}), timeout=2)\nassert s.recv(2) == b'ok'",
        "udp to 127.0.0.1": (
            f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(2)\n"
            f"s.sendto(b'leak', ('127.0.0.1', {lst.udp.getsockname()[1]}))\nassert s.recvfrom(2)[0] == b'ok'"
        ),
        "abstract unix socket": f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({lst.abstract_name!r})\nassert s.recv(2) == b'ok'",
        "filesystem unix socket": f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({lst.path!r})\nassert s.recv(2) == b'ok'",
        "write outside the work dir": (
            f"for target in [{out('write')}, '/usr/rb-hostile', '/root/rb-hostile', '/tmp/rb-hostile']:\n"
            "    try:\n        open(target, 'w').write('x')\n    except OSError:\n        pass\n"
            f"assert open({out('write')}).read() == 'x'"
        ),
        # The parent first: a signal to the namespace's init is dropped without an error.
        "signal the grader": f"import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill({pid}, signal.SIGKILL)",
        "forge the end marker": (
            "import os, re\nseen = b''\nfor p in ('/proc/self/cmdline', '/proc/1/cmdline'):\n    try:\n        seen += open(p, 'rb').read()\n    except OSError:\n        pass\n"
            "m = re.search(rb'routerbench-sandbox-[0-9a-f]{32}', seen)\nprint(f'\\n{m.group().decode()}:end', flush=True)\nos._exit(0)"
        ),
        "nested user namespace": "import ctypes\nassert ctypes.CDLL(None).unshare(0x10000000) == 0",  # CLONE_NEWUSER
    }


ATTACK_NAMES = [
    "read /etc/shadow", "read /proc/*/environ", "read /proc/1/cmdline", "read the store", "read ~/.routerbench",
    "list the host's users", "spawn: subprocess", "spawn: os.system", "spawn: os.exec", "spawn: os.posix_spawn",
    "spawn: os.fork", "spawn: _posixsubprocess.fork_exec", "spawn: ctypes libc system", "spawn: multiprocessing",
    "tcp to 127.0.0.1", "udp to 127.0.0.1", "abstract unix socket", "filesystem unix socket",
    "write outside the work dir", "signal the grader", "forge the end marker", "nested user namespace",
]  # fmt: skip


def test_every_attack_is_listed(world: dict) -> None:
    assert list(_attacks(world)) == ATTACK_NAMES


@pytest.mark.parametrize("guard", [True, False], ids=["guard", "bubblewrap-alone"])
@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_an_attack_fails_and_is_recorded_as_a_failing_program(world: dict, attack: str, guard: bool) -> None:
    heard_before = list(world["listener"].heard)
    result = run_python(_attacks(world)[attack], FAST, guard=guard)
    assert result.status in ("failed", "killed", "timeout"), f"{attack}: {result.status}: {result.output[-300:]}"
    assert SECRET not in result.output
    assert world["listener"].heard == heard_before, f"{attack} reached a listener outside the sandbox"
    assert world["decoy"].poll() is None, f"{attack} killed a process outside the sandbox"
    assert not list(world["tmp"].glob("exfil-*")), f"{attack} wrote to the host"
    assert not Path("/usr/rb-hostile").exists() and not Path("/tmp/rb-hostile").exists()


def test_attacks_through_the_grader_score_zero_and_leave_it_working(world: dict) -> None:
    attacks = _attacks(world)
    # keep_examples: the attacks are top-level code, which the default grader would drop unrun
    grader = build_grader("code-exec", limits=FAST, workers=2, keep_examples=True)
    responses = [f"```python\n{code}\n```" for code in attacks.values()]
    grades = grader.grade_batch(responses, ["assert True"] * len(responses), [{}] * len(responses))
    assert [g.score for g in grades] == [0.0] * len(attacks), {a: g for a, g in zip(attacks, grades) if g.score != 0.0}
    assert grader.grade_batch(["```python\ndef f():\n    return 1\n```"], ["assert f() == 1"])[0].score == 1.0


@pytest.mark.parametrize("guard", [True, False], ids=["guard", "bubblewrap-alone"])
def test_resource_attacks_are_stopped(guard: bool) -> None:
    memory = run_python("x = bytearray(8 * 1024**3)\nassert x", FAST, guard=guard)
    assert memory.status == "failed" and "MemoryError" in memory.output
    loop = run_in_time(SPIN, SandboxLimits(wall_s=120, cpu_s=1), guard=guard)  # the CPU limit, long before the wall clock
    assert stopped_by_the_cpu_limit(loop, 1), (loop.status, loop.returncode, loop.output[-300:])
    sleep = run_in_time(LONG_SLEEP, SandboxLimits(wall_s=10), guard=guard)  # 10 s: the interpreter must start first, under load too
    assert sleep.status == "timeout" and sleep.returncode is None and sleep.seconds >= 10, sleep  # ended at the timeout, not the program's end
    flood = run_python("import sys\nsys.stdout.write('x' * 100_000_000)\nsys.stdout.flush()", SandboxLimits(file_mb=1, wall_s=20), guard=guard)
    assert flood.status in ("failed", "killed") and len(flood.output) <= 5000


def test_a_fork_bomb_is_refused_by_the_guard() -> None:
    result = run_python("import os\nwhile True:\n    os.fork()", FAST)
    assert result.status == "failed" and "os.fork is not allowed" in result.output


@pytest.mark.skipif(caps.pids_cgroup is None, reason="no pids cgroup here: without the guard only the PID namespace would hold a fork bomb")
def test_a_fork_bomb_is_contained_by_bubblewrap_and_the_pids_cgroup() -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_python(bomb, SandboxLimits(wall_s=10, cpu_s=2, max_procs=16), guard=False)  # 10 s: time for the interpreter to start under load
    assert result.status in ("timeout", "killed")
    assert run_python("print('still fine')", FAST).passed


def test_children_that_leave_the_session_die_with_the_run() -> None:
    token = sleep_token()
    assert run_python(SLEEPERS.format(token=token), FAST, guard=False).passed  # ends once its three children sleep
    assert not wait_until_gone(token)


def test_legitimate_programs_still_pass() -> None:
    programs = {
        "stdlib": "import re, math, heapq, collections, itertools, functools, fractions, decimal, datetime, json, bisect, string, statistics, random, typing\nprint(math.comb(5, 2))",
        "own temp dir": "import tempfile, os\nd = tempfile.mkdtemp()\nopen(os.path.join(d, 'x'), 'w').write('y')\nwith tempfile.NamedTemporaryFile('w') as f:\n    f.write('z')\nassert open(os.path.join(d, 'x')).read() == 'y'",
        "recursion": "import sys\nsys.setrecursionlimit(10000)\ndef depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\nassert depth(5000) == 5000",
        "numpy": "import numpy as np\nassert np.arange(4).sum() == 6",
        "unicode output": "print('ünïcødé ✓')",
    }
    for name, code in programs.items():
        result = run_python(code, FAST)
        assert result.passed, f"{name}: {result.output[-300:]}"


@pytest.mark.parametrize("attack", ["read /proc/*/environ", "read /proc/1/cmdline", "read the store", "read ~/.routerbench", "list the host's users", "filesystem unix socket"])
def test_the_attacks_are_real_they_succeed_in_the_weaker_sandbox(world: dict, attack: str) -> None:
    """The control: in the process sandbox without its guard (no bubblewrap), these attacks pass."""
    result = run_python(_attacks(world)[attack], FAST, guard=False, isolation="process")
    assert result.passed, f"{attack}: {result.status}: {result.output[-300:]}"


@pytest.mark.parametrize("count", [pytest.param(40, id="first-40"), pytest.param(None, id="all-427", marks=pytest.mark.slow)])
def test_mbpp_reference_solutions_pass_as_in_the_old_sandbox(count: int | None) -> None:
    """A legitimate program never fails because the sandbox got stronger: MBPP's own solutions
    pass their own tests in bubblewrap exactly where they pass in the process sandbox."""
    from bench.bench_sandbox import mbpp_programs
    from tests.conftest import SHARED_DATA, require_shared

    responses, golds = mbpp_programs(require_shared(SHARED_DATA))
    responses, golds = responses[:count], golds[:count]
    strong = [g.score for g in build_grader("code-exec").grade_batch(responses, golds)]
    with pytest.warns(UserWarning, match="unsafe-sandbox"):
        weak = [g.score for g in build_grader("code-exec", unsafe_sandbox=True).grade_batch(responses, golds)]
    assert strong == weak
    assert sum(s == 1.0 for s in strong) >= 0.95 * len(strong)
