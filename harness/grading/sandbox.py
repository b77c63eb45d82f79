"""Run untrusted Python in a separate, confined process: the engine under the code-execution grader.

Two isolations, chosen per run:

- ``bubblewrap`` (the default; :mod:`harness.grading.bubblewrap`): new user, PID, network, IPC,
  UTS, cgroup and mount namespaces, uid 65534, an empty environment, its own ``/proc``, only
  ``/usr`` and the interpreter bound read-only, a fresh bounded tmpfs as working directory. Where
  bubblewrap is missing or cannot create namespaces, :func:`require_bubblewrap` refuses with a
  one-line error saying how to install it.
- ``process`` (``--unsafe-sandbox``; the weaker sandbox of earlier versions): a host temporary
  directory, ``unshare --net --mount`` where the kernel allows it, every mount remounted read-only.
  Native code can still read world-readable host files and the parent's ``/proc`` there.

Under both, enforced by the operating system: limits (``setrlimit``, hard and soft: CPU seconds,
address space, file size, open files, no core dumps; ``RLIMIT_NPROC`` where not root), a wall-clock
timeout after which everything is killed, and a pids cgroup (``pids.max``) where one can be
created, which also kills every process of the run at its end. Inside the interpreter, as a second
layer, an audit hook that cannot be removed refuses sockets, process creation, ``ctypes``/``cffi``,
signals, raising limits and file access outside the working directory (reads are allowed under the
Python installation). The child side is :mod:`harness.grading.sandbox_child`; the program and the
child's settings reach it on standard input, never on its command line.

Not guaranteed: that a program cannot game its own tests (an object whose ``__eq__`` is always
true passes ``assert f(x) == y``); the sandbox contains code, it does not judge it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.grading import bubblewrap

CHILD = Path(__file__).with_name("sandbox_child.py")
CGROUP_PARENT = "routerbench-sandbox"
OUTPUT_TAIL = 4096
WORKDIR_PREFIX = "rb-sandbox-"
BUBBLEWRAP, PROCESS = "bubblewrap", "process"
ISOLATIONS = (BUBBLEWRAP, PROCESS)
#: The minimal environment of every run (nothing of the grader's own).
BASE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
}


class SandboxUnavailable(UserError):
    """Code grading was asked for, and bubblewrap cannot run here."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per run. ``max_procs`` counts processes and threads (pids cgroup / ``RLIMIT_NPROC``)."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    file_mb: int = 16
    open_files: int = 64
    max_procs: int = 16


@dataclass(frozen=True)
class RunResult:
    status: str  # passed | failed | timeout | killed | sandbox-error
    returncode: int | None
    output: str  # the tail of stdout and stderr
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Capabilities:
    """The OS-level layers this machine grants (the interpreter-level guard is always on)."""

    bubblewrap: str | None  # bubblewrap's version where it can create its namespaces here
    bubblewrap_error: str | None  # else why not
    network_namespace: bool  # the process isolation's layers
    mount_namespace: bool
    pids_cgroup: str | None  # the cgroup directory runs are placed under, if any
    nproc_rlimit: bool  # RLIMIT_NPROC applies (not root)


def _probe(cmd: list[str]) -> bool:
    try:  # the minimal environment: a probe is a child of the driver, which may hold API keys
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, env=BASE_ENV).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _pids_cgroup_root() -> Path | None:
    """A writable pids cgroup (v1 ``pids`` hierarchy or a delegated v2 one) to put runs under, or None."""
    candidates = [Path("/sys/fs/cgroup/pids")]
    v2 = Path("/sys/fs/cgroup")
    try:
        if "pids" in (v2 / "cgroup.subtree_control").read_text().split():
            candidates.append(v2)
    except OSError:
        pass
    for base in candidates:
        probe = base / CGROUP_PARENT / f"probe-{uuid.uuid4().hex[:8]}"
        try:
            probe.mkdir(parents=True)
            (probe / "pids.max").write_text("8")
            probe.rmdir()
            return base / CGROUP_PARENT
        except OSError:
            try:
                probe.rmdir()
            except OSError:
                pass
    return None


@functools.lru_cache(maxsize=1)
def capabilities() -> Capabilities:
    unshare = shutil.which("unshare")
    net = bool(unshare) and _probe([unshare, "--net", "true"])
    mount = net and _probe([unshare, "--net", "--mount", "true"])
    cgroup = _pids_cgroup_root()
    version, why = bubblewrap.probe()
    return Capabilities(version, why, net, mount, None if cgroup is None else str(cgroup), os.geteuid() != 0)


def require_bubblewrap() -> None:
    """Refuse, with how to fix it, where model-written code cannot be run in bubblewrap."""
    caps = capabilities()
    if caps.bubblewrap is None:
        raise SandboxUnavailable(
            f"code-exec grading runs model-written code in bubblewrap, and {caps.bubblewrap_error}: "
            f"{bubblewrap.INSTALL_HINT}; `routerbench sandbox check` tests it; --unsafe-sandbox grades in the weaker process sandbox instead"
        )


@functools.lru_cache(maxsize=1)
def _read_roots() -> tuple[str, ...]:
    """Where the child may read besides its directory: the interpreter's libraries, for imports."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {sys.base_prefix + "/lib", sys.prefix + "/lib", "/usr/share/zoneinfo", "/dev/null", "/dev/urandom"}
    return tuple(sorted(r for r in roots if os.path.exists(r)))


def _rlimits(limits: SandboxLimits) -> dict[str, int]:
    mb = 1024 * 1024
    return {
        "RLIMIT_CPU": int(limits.cpu_s),
        "RLIMIT_AS": int(limits.memory_mb * mb),
        "RLIMIT_FSIZE": int(limits.file_mb * mb),
        "RLIMIT_NOFILE": int(limits.open_files),
        "RLIMIT_CORE": 0,
        **({"RLIMIT_NPROC": _nproc_limit(limits)} if os.geteuid() != 0 else {}),
    }


def _nproc_limit(limits: SandboxLimits) -> int:
    """RLIMIT_NPROC counts all of the user's processes, so leave room for those already running."""
    uid = os.geteuid()
    mine = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                mine += entry.stat().st_uid == uid
            except OSError:
                pass
    return mine + limits.max_procs


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Cgroup:
    """One run's pids cgroup: caps the number of processes, and kills every one of them at the end."""

    def __init__(self, root: str | None, max_procs: int) -> None:
        self.path: Path | None = None
        if root is None:
            return
        path = Path(root) / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir(parents=True)
            (path / "pids.max").write_text(str(max_procs))
            self.path = path
        except OSError:
            self.path = None

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` started inside the cgroup: a shell joins it, then execs, so nothing runs outside it."""
        if self.path is None:
            return cmd
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *cmd]

    def kill_all(self) -> None:
        """Kill until the cgroup is empty, then remove it (orphans' zombies may take a moment to go)."""
        if self.path is None:
            return
        for attempt in range(100):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
                if not pids:
                    self.path.rmdir()
                    self.path = None
                    return
            except OSError:
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.002 * (attempt + 1))


def _head_and_tail(f) -> tuple[str, str]:  # noqa: ANN001 - a binary file object
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    head = f.read(256).decode("utf-8", "replace")
    f.seek(max(0, size - OUTPUT_TAIL))
    return head, f.read().decode("utf-8", "replace")


def _command(isolation: str, workdir: Path | None, work_bytes: int) -> tuple[list[str], dict[str, str]]:
    """The child's command line and environment for one isolation."""
    child = [sys.executable, "-I", "-B", str(CHILD)]
    if isolation == BUBBLEWRAP:
        env = {**BASE_ENV, "HOME": bubblewrap.WORKDIR, "TMPDIR": bubblewrap.WORKDIR}
        return bubblewrap.command(child, env, work_bytes, extra_ro=(str(CHILD),)), {"PATH": BASE_ENV["PATH"]}
    caps = capabilities()
    if caps.network_namespace:
        child = [shutil.which("unshare") or "unshare", "--net", *(["--mount"] if caps.mount_namespace else []), "--", *child]
    return child, {**BASE_ENV, "HOME": str(workdir), "TMPDIR": str(workdir)}


def run_python(source: str, limits: SandboxLimits = SandboxLimits(), *, guard: bool = True, isolation: str = BUBBLEWRAP) -> RunResult:
    """Run ``source`` as ``main.py`` in a fresh confined child; ``passed`` only if it ran to its end.

    The child prints a begin marker before the program and an end marker after it (both unknown to
    the program); without the begin marker the sandbox itself failed or never got to the program
    in time (``sandbox-error``: the grader's error, not the program's failure).
    ``guard=False`` leaves out the interpreter-level audit hook (to test the OS-level layers alone).
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation {isolation!r}: one of {', '.join(ISOLATIONS)}")
    caps = capabilities()
    if isolation == BUBBLEWRAP and caps.bubblewrap is None:
        return RunResult("sandbox-error", None, f"bubblewrap: {caps.bubblewrap_error}", 0.0)
    workdir = None if isolation == BUBBLEWRAP else Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    cgroup = _Cgroup(caps.pids_cgroup, limits.max_procs)
    marker = f"routerbench-sandbox-{uuid.uuid4().hex}"
    started = time.monotonic()
    try:
        config = {
            "rlimits": _rlimits(limits),
            "read_only_mounts": isolation == PROCESS and caps.mount_namespace,
            "parent_mount_namespace": os.readlink("/proc/self/ns/mnt") if isolation == PROCESS and caps.mount_namespace else "",
            "guard": guard,
            "read_roots": list(_read_roots()),
            "marker": marker,
            "source": source,
        }
        try:
            cmd, env = _command(isolation, workdir, max(4 * limits.file_mb, 64) * 1024 * 1024)
        except (OSError, RuntimeError) as exc:
            return RunResult("sandbox-error", None, f"cannot start the sandbox: {exc}", 0.0)
        with tempfile.TemporaryFile() as out:  # outside the child's reach: it can only write to it
            try:
                proc = subprocess.Popen(cgroup.wrap(cmd), cwd=workdir or "/", env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                return RunResult("sandbox-error", None, f"cannot start the sandbox: {exc}", 0.0)
            try:
                try:
                    proc.stdin.write(json.dumps(config).encode())  # type: ignore[union-attr]
                    proc.stdin.close()  # type: ignore[union-attr]
                except OSError:
                    pass  # the child died before reading: no begin marker, a sandbox error
                returncode: int | None = proc.wait(timeout=limits.wall_s)
                status = None
            except subprocess.TimeoutExpired:
                returncode, status = None, "timeout"
            finally:
                _kill_group(proc.pid)
                proc.wait()  # reaped first: a zombie would keep its cgroup busy
                cgroup.kill_all()
            head, tail = _head_and_tail(out)
        if isolation == BUBBLEWRAP and returncode is not None and returncode > 128:
            returncode = 128 - returncode  # bwrap exits 128+N for a child killed by signal N
        begun = head.startswith(f"{marker}:begin")
        if not begun:  # the program never started (a slow start past the wall clock included)
            status = "sandbox-error"
        elif status is None:
            if returncode == 0 and tail.rstrip().endswith(f"{marker}:end"):
                status = "passed"
            else:
                status = "killed" if returncode is not None and returncode < 0 else "failed"
        output = tail.replace(f"{marker}:begin\n", "").replace(f"{marker}:end", "").rstrip()
        return RunResult(status, returncode, output, time.monotonic() - started)
    finally:
        cgroup.kill_all()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
