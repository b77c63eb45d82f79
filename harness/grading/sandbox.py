"""Run untrusted Python in a separate, confined process: the engine under the code-execution grader.

Each run gets a fresh temporary directory (its working directory, ``HOME`` and ``TMPDIR``), a new
session (process group), and the layers below; the child side is :mod:`harness.grading.sandbox_child`.

Enforced by the operating system (hold even against native code):

- limits (``setrlimit``, hard and soft): CPU seconds, address space, file size, open files, no
  core dumps, and ``RLIMIT_NPROC`` (which Linux ignores for root);
- a wall-clock timeout, after which the process group is killed; the group is killed after every
  run anyway, and so is everything in the run's pids cgroup;
- no network: a new, empty network namespace (``unshare --net``) where the kernel allows it;
- fork bombs: a pids cgroup (``pids.max``) where one can be created, else ``RLIMIT_NPROC``;
- writes outside the temporary directory: every mount is remounted read-only in a private mount
  namespace (``unshare --mount``) where the kernel allows it.

Enforced inside the interpreter (an audit hook that cannot be removed; native code could bypass it):
no socket creation, no fork/exec/subprocess/``os.system``, no ``ctypes``/``cffi``, no signals to
other processes, no raising limits, no opening/listing/changing files outside the temporary
directory (reads are also allowed under the Python installation, for imports).

Not enforced: reads of world-readable files by native code (there is no chroot), and CPU or
memory shared with other processes beyond the limits above. :func:`capabilities` says which
OS-level layers this machine grants.
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
from dataclasses import asdict, dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("sandbox_child.py")
CGROUP_PARENT = "routerbench-sandbox"
OUTPUT_TAIL = 4096
WORKDIR_PREFIX = "rb-sandbox-"


@dataclass(frozen=True)
class Limits:
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

    network_namespace: bool
    mount_namespace: bool
    pids_cgroup: str | None  # the cgroup directory runs are placed under, if any
    nproc_rlimit: bool  # RLIMIT_NPROC applies (not root)


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=10).returncode == 0
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
    return Capabilities(net, mount, None if cgroup is None else str(cgroup), os.geteuid() != 0)


@functools.lru_cache(maxsize=1)
def _read_roots() -> tuple[str, ...]:
    """Where the child may read besides its directory: the interpreter's libraries, for imports."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots |= {sys.base_prefix + "/lib", sys.prefix + "/lib", "/usr/share/zoneinfo", "/dev/null", "/dev/urandom"}
    return tuple(sorted(r for r in roots if os.path.exists(r)))


def _rlimits(limits: Limits) -> dict[str, int]:
    mb = 1024 * 1024
    return {
        "RLIMIT_CPU": int(limits.cpu_s),
        "RLIMIT_AS": int(limits.memory_mb * mb),
        "RLIMIT_FSIZE": int(limits.file_mb * mb),
        "RLIMIT_NOFILE": int(limits.open_files),
        "RLIMIT_CORE": 0,
        **({"RLIMIT_NPROC": _nproc_limit(limits)} if os.geteuid() != 0 else {}),
    }


def _nproc_limit(limits: Limits) -> int:
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

    @property
    def procs_file(self) -> str | None:
        return None if self.path is None else str(self.path / "cgroup.procs")

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


def run_python(source: str, limits: Limits = Limits(), *, guard: bool = True) -> RunResult:
    """Run ``source`` as ``main.py`` in a fresh confined child; ``passed`` only if it ran to its end.

    The child prints a begin marker before the program and an end marker after it (both unknown to
    the program); without the begin marker the sandbox itself failed (``sandbox-error``).
    ``guard=False`` leaves out the interpreter-level audit hook (to test the OS-level layers alone).
    """
    caps = capabilities()
    workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
    cgroup = _Cgroup(caps.pids_cgroup, limits.max_procs)
    marker = f"routerbench-sandbox-{uuid.uuid4().hex}"
    started = time.monotonic()
    try:
        (workdir / "main.py").write_text(source, encoding="utf-8")
        config = {
            "rlimits": _rlimits(limits),
            "cgroup_procs": cgroup.procs_file,
            "read_only_mounts": caps.mount_namespace,
            "parent_mount_namespace": os.readlink("/proc/self/ns/mnt") if caps.mount_namespace else "",
            "guard": guard,
            "read_roots": list(_read_roots()),
            "marker": marker,
        }
        cmd = [sys.executable, "-I", "-B", str(CHILD), json.dumps(config)]
        if caps.network_namespace:
            cmd = [shutil.which("unshare") or "unshare", "--net", *(["--mount"] if caps.mount_namespace else []), "--", *cmd]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            **{k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        }
        with tempfile.TemporaryFile() as out:  # outside the child's directory: it cannot reach the file
            try:
                proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                return RunResult("sandbox-error", None, f"cannot start the sandbox: {exc}", 0.0)
            try:
                returncode: int | None = proc.wait(timeout=limits.wall_s)
                status = None
            except subprocess.TimeoutExpired:
                returncode, status = None, "timeout"
            finally:
                _kill_group(proc.pid)
                proc.wait()  # reaped first: a zombie would keep its cgroup busy
                cgroup.kill_all()
            head, tail = _head_and_tail(out)
        begun = head.startswith(f"{marker}:begin")
        if status is None:
            if not begun:
                status = "sandbox-error"
            elif returncode == 0 and tail.rstrip().endswith(f"{marker}:end"):
                status = "passed"
            else:
                status = "killed" if returncode is not None and returncode < 0 else "failed"
        output = tail.replace(f"{marker}:begin\n", "").replace(f"{marker}:end", "").rstrip()
        return RunResult(status, returncode, output, time.monotonic() - started)
    finally:
        cgroup.kill_all()
        shutil.rmtree(workdir, ignore_errors=True)


def describe() -> dict:
    """The limits' defaults and this machine's capabilities, for reports."""
    return {"limits": asdict(Limits()), "capabilities": asdict(capabilities())}
