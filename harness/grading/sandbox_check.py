"""``routerbench sandbox check``: which layers of the code sandbox are active here, each proven by
a short program run inside it (with the interpreter guard off, so the OS layer alone is tested)."""

from __future__ import annotations

import json
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.grading import bubblewrap
from harness.grading.sandbox import BASE_ENV, BUBBLEWRAP, SandboxLimits, capabilities, run_python

#: All a sandboxed process may find in its environment (``PWD`` is the shell convention bwrap sets).
ALLOWED_ENV = {*BASE_ENV, "HOME", "TMPDIR", "PWD"}

_PROBE = r"""
import json, os, socket
seen = {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "env": sorted(os.environ), "cwd": os.getcwd()}
seen["host_dirs"] = [d for d in ("/etc", "/tmp", "/run", "/home", "/var", "/root/.routerbench") if os.path.exists(d)]
seen["environs"] = sorted({e.split(b"=")[0].decode() for p in os.listdir("/proc") if p.isdigit() for e in open(f"/proc/{p}/environ", "rb").read().split(b"\0") if e})
seen["procs"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
def fails(f):
    try:
        f()
        return False
    except OSError:
        return True
seen["usr_read_only"] = fails(lambda: open("/usr/rb-sandbox-probe", "w"))
seen["tcp_refused"] = fails(lambda: socket.create_connection(("127.0.0.1", __PORT__), timeout=2))
seen["unix_refused"] = fails(lambda: socket.socket(socket.AF_UNIX).connect(__UNIX__))
seen["userns_refused"] = fails(lambda: os.unshare(os.CLONE_NEWUSER)) if hasattr(os, "unshare") else True
print(json.dumps(seen))
"""


@dataclass(frozen=True)
class Check:
    layer: str
    ok: bool | None  # None: not available on this machine (not a failure of the check)
    detail: str


def run_checks() -> list[Check]:
    """Every layer with its evidence; bubblewrap's layers from one probe run inside it."""
    caps = capabilities()
    checks = [Check("bubblewrap", caps.bubblewrap is not None, caps.bubblewrap or f"{caps.bubblewrap_error}: {bubblewrap.INSTALL_HINT}")]
    if caps.bubblewrap is not None:
        checks += _bubblewrap_checks()
    checks.append(Check("pids cgroup", caps.pids_cgroup is not None or None, caps.pids_cgroup or "none writable here: fork bombs are held by the PID namespace, RLIMIT_NPROC (not root) and the guard"))
    limits = run_python("while True:\n    pass", SandboxLimits(wall_s=10, cpu_s=1), isolation=_isolation(caps))
    checks.append(Check("rlimits (CPU)", limits.status == "killed", f"a busy loop was {limits.status} after {limits.seconds:.1f} s"))
    guard = run_python("import socket\nsocket.socket()", SandboxLimits(wall_s=10), isolation=_isolation(caps))
    checks.append(Check("audit hook", "not allowed" in guard.output, "socket() refused inside the interpreter" if "not allowed" in guard.output else guard.output[-160:]))
    return checks


def _isolation(caps) -> str:  # noqa: ANN001 - Capabilities
    return BUBBLEWRAP if caps.bubblewrap is not None else "process"


def _bubblewrap_checks() -> list[Check]:
    with socket.socket() as tcp, tempfile.TemporaryDirectory() as tmp, socket.socket(socket.AF_UNIX) as unix:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        path = str(Path(tmp) / "probe.sock")
        unix.bind(path)
        unix.listen()
        source = _PROBE.replace("__PORT__", str(tcp.getsockname()[1])).replace("__UNIX__", repr(path))
        result = run_python(source, SandboxLimits(wall_s=20), guard=False)
    if not result.passed:
        return [Check("bubblewrap self-test", False, f"{result.status}: {result.output[-200:]}")]
    seen = json.loads(result.output.strip().splitlines()[-1])
    foreign = sorted((set(seen["env"]) | set(seen["environs"])) - ALLOWED_ENV)
    return [
        Check("user namespace", seen["uid"] == bubblewrap.SANDBOX_UID and seen["userns_refused"], f"uid {seen['uid']}, gid {seen['gid']}; nested user namespaces refused: {seen['userns_refused']}"),
        Check("PID namespace + own /proc", len(seen["procs"]) <= 3, f"sees {len(seen['procs'])} processes, its own pid {seen['pid']}"),
        Check("empty environment", not foreign, f"variables of every process inside: {', '.join(sorted(set(seen['environs'])))}" + (f"; not ours: {', '.join(foreign)}" if foreign else "")),
        Check("mount namespace", not seen["host_dirs"] and seen["usr_read_only"], f"host directories visible: {', '.join(seen['host_dirs']) or 'none'}; /usr read-only: {seen['usr_read_only']}; works in {seen['cwd']} (tmpfs)"),
        Check("network namespace", seen["tcp_refused"] and seen["unix_refused"], f"127.0.0.1 TCP refused: {seen['tcp_refused']}; host Unix socket refused: {seen['unix_refused']}"),
    ]
