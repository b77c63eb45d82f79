"""The bubblewrap layer of the sandbox: the ``bwrap`` command line that confines one run.

Each run gets new user, PID, network, IPC, UTS, cgroup and mount namespaces (``--unshare-all``),
no nested user namespaces (``--disable-userns``), uid/gid 65534 inside, an empty environment
(``--clearenv`` plus a few harmless variables), its own ``/proc`` and a minimal ``/dev``, read-only
binds of ``/usr`` (the libraries the interpreter links) and of the interpreter's own prefixes, and
a fresh tmpfs of bounded size as its working directory. Nothing else of the host exists inside:
no ``/etc``, ``/tmp``, ``/run``, ``/home``, no store, no Ray session directory, no parent's
``/proc/<pid>/environ``. ``--die-with-parent`` ends it with the grader; ``--new-session`` keeps it
off the grader's terminal.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SANDBOX_UID = 65534
SANDBOX_GID = 65534
#: The working directory inside (a tmpfs): HOME and TMPDIR point here too.
WORKDIR = "/sandbox"
#: Top-level directories that are symlinks into /usr on merged-/usr systems (else bound read-only).
_SYSTEM_TOPS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`)"


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@functools.lru_cache(maxsize=1)
def interpreter_roots() -> tuple[str, ...]:
    """Directories outside /usr that the interpreter needs: its prefixes (a virtualenv and the
    installation it links to). A prefix that would expose the home or temp directory is refused."""
    exe = Path(os.path.realpath(sys.executable))
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, str(exe.parent.parent)}
    forbidden = [Path("/"), Path.home().resolve(), Path(tempfile.gettempdir()).resolve()]
    roots: set[Path] = set()
    for c in candidates:
        p = Path(os.path.realpath(c))
        if _inside(p, Path("/usr")) or not p.is_dir():
            continue
        if any(_inside(f, p) for f in forbidden):
            raise RuntimeError(f"the interpreter's prefix {p} holds {next(f for f in forbidden if _inside(f, p))}: it cannot be bound into the sandbox")
        roots.add(p)
    # A prefix inside another one is bound with it.
    return tuple(sorted(str(r) for r in roots if not any(o != r and _inside(r, o) for o in roots)))


def command(argv: list[str], env: dict[str, str], work_bytes: int, extra_ro: tuple[str, ...] = ()) -> list[str]:
    """``bwrap`` arguments that run ``argv`` confined, in a fresh tmpfs of ``work_bytes``."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise FileNotFoundError("bwrap")
    args = [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--hostname", "sandbox", "--clearenv",
    ]  # fmt: skip
    for key, value in env.items():
        args += ["--setenv", key, value]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in _SYSTEM_TOPS:
        p = Path("/") / top
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    for root in (*interpreter_roots(), *extra_ro):
        args += ["--ro-bind", root, root]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(int(work_bytes)), "--tmpfs", WORKDIR, "--chdir", WORKDIR, "--", *argv]
    return args


@functools.lru_cache(maxsize=1)
def probe() -> tuple[str | None, str | None]:
    """``(version, None)`` when bubblewrap can create its namespaces here, else ``(None, why)``."""
    bwrap = bwrap_path()
    if bwrap is None:
        return None, "bwrap is not installed"
    try:
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10, env={"PATH": "/usr/bin:/bin"}).stdout.strip() or "bubblewrap"
        argv = [sys.executable, "-I", "-S", "-c", "import os; print(os.getuid())"]
        run = subprocess.run(command(argv, {"PATH": "/usr/bin:/bin"}, 1 << 20), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return None, f"bwrap cannot start: {exc}"
    if run.returncode != 0 or run.stdout.strip() != str(SANDBOX_UID):
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"bwrap cannot create its namespaces here ({last})"
    return version, None
