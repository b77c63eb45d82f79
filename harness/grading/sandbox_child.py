"""Runs inside the sandbox's child process, before the untrusted program: confine, then execute it.

Started by :mod:`harness.grading.sandbox` as ``python -I -B sandbox_child.py`` in its fresh working
directory, with its settings and the program as JSON on standard input (so neither shows in
``/proc/<pid>/cmdline``); standard input is then closed. Standard library only, so it imports
nothing from outside the interpreter. In order it: lowers its resource limits
(hard and soft, so the program cannot raise them again), makes every mount read-only except the
temporary directory where it may (a private mount namespace), installs an audit hook that refuses
network, process creation, native-code loading and file access outside the allowed directories,
then prints the run's begin marker, runs ``main.py`` and prints the end marker only if the program
ran to its end.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def lower_limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def read_only_mounts(keep_writable: str, parent_namespace: str) -> bool:
    """Remount every mount read-only in this private mount namespace, except ``keep_writable``.

    Refuses unless this process is in a mount namespace other than its parent's, so the remounts
    can never touch the host's mounts.
    """
    if not parent_namespace or os.readlink("/proc/self/ns/mnt") == parent_namespace:
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        ms_rdonly, ms_remount, ms_bind, ms_rec = 1, 32, 4096, 16384
        if libc.mount(keep_writable.encode(), keep_writable.encode(), None, ms_bind | ms_rec, None) != 0:
            return False
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].encode().decode("unicode_escape") for line in f]
        ok = True
        for point in points:
            if point == keep_writable:
                continue
            if libc.mount(None, point.encode(), None, ms_remount | ms_bind | ms_rdonly, None) != 0:
                ok = ok and point.startswith(("/proc", "/sys", "/dev"))  # pseudo file systems may refuse
        os.chdir(keep_writable)  # the old working directory lies under the now read-only mount
        return ok
    except (OSError, AttributeError):
        return False
    finally:  # a later `import ctypes` by the program must go through the guard again
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
            del sys.modules[name]


def install_guard(workdir: str, read_roots: list[str]) -> None:
    """An audit hook (cannot be removed) that keeps the program to ``workdir`` and off the network."""
    realpath, join, fsdecode, sep = os.path.realpath, os.path.join, os.fsdecode, os.sep
    writable = (realpath(workdir),)
    readable = writable + tuple(realpath(r) for r in read_roots)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    refused = {
        "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
        "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg",
        "subprocess.Popen", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
        "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
        "resource.setrlimit", "resource.prlimit", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
        "ctypes.call_function", "os.chroot", "sys.remote_exec", "webbrowser.open",
    }  # fmt: skip
    native = {"ctypes", "_ctypes", "cffi", "_cffi_backend"}
    path_writes = {
        "os.remove": (0,), "os.rename": (0, 1), "os.mkdir": (0,), "os.rmdir": (0,), "os.chmod": (0,),
        "os.chown": (0,), "os.symlink": (1,), "os.link": (0, 1), "os.truncate": (0,), "os.utime": (0,),
        "os.mkfifo": (0,), "os.mknod": (0,), "os.setxattr": (0,), "os.removexattr": (0,),
        "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.copytree": (1,), "shutil.move": (0, 1),
        "shutil.make_archive": (0,), "shutil.unpack_archive": (1,),
    }  # fmt: skip
    path_reads = {"os.listdir": (0,), "os.scandir": (0,), "os.chdir": (0,), "os.getxattr": (0,), "os.listxattr": (0,), "glob.glob": (0,)}
    busy = [False]

    def under(path: object, roots: tuple[str, ...]) -> bool:
        if path is None or isinstance(path, int):  # the working directory, or a descriptor already open
            return True
        p = realpath(join(writable[0], fsdecode(path)))  # type: ignore[arg-type]
        return any(p == r or p.startswith(r + sep) for r in roots)

    def hook(event: str, args: tuple) -> None:
        if busy[0]:
            return
        busy[0] = True
        try:
            if event in refused:
                raise PermissionError(f"sandbox: {event} is not allowed")
            if event == "import" and args[0].split(".")[0] in native:
                raise ImportError(f"sandbox: importing {args[0]} is not allowed")
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None))[:3]
                writing = bool((flags or 0) & write_flags) or any(c in (mode or "") for c in "wax+")
                if not under(path, writable if writing else readable):
                    raise PermissionError(f"sandbox: {'writing' if writing else 'reading'} {path!r} is outside the sandbox")
            elif event in path_writes or event in path_reads:
                roots = writable if event in path_writes else readable
                for i in path_writes.get(event, path_reads.get(event, ())):
                    if i < len(args) and not under(args[i], roots):
                        raise PermissionError(f"sandbox: {event} on {args[i]!r} is outside the sandbox")
        finally:
            busy[0] = False

    sys.addaudithook(hook)


def read_config() -> dict:
    """The settings and program from standard input, which then reads as empty."""
    config = json.loads(sys.stdin.buffer.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return config


def main() -> None:
    config = read_config()
    source = config.pop("source")
    with open("main.py", "w", encoding="utf-8") as f:
        f.write(source)
    lower_limits(config["rlimits"])
    workdir = os.getcwd()
    if config.get("read_only_mounts"):
        read_only_mounts(workdir, config.get("parent_mount_namespace", ""))
    if config.get("guard", True):
        install_guard(workdir, config.get("read_roots", []))
    marker = config.pop("marker")
    sys.argv = ["main.py"]
    sys.stdout.write(f"{marker}:begin\n")
    sys.stdout.flush()
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "main.py", "exec"), namespace)
    except SystemExit as exc:  # an early exit, even exit(0), is not a pass
        sys.stderr.write(f"sandbox: the program exited early ({exc.code!r})\n")
        sys.exit(3)
    sys.stdout.flush()
    sys.stdout.write(f"\n{marker}:end\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
