"""API keys live only where engines run, and what would fail inside Ray fails before it, in one line.

The real CLI in a subprocess, a real store, the fault-injecting server on 127.0.0.1 (which answers
only the right key), and — for the slow test — a real local Ray whose processes are inspected
through /proc while an extend runs.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.store import Store
from harness.generation.testing.fault_server import FaultPlan, FaultServer
from harness.grading import build_grader
from harness.model_config import ModelConfig, key_variables
from harness.tasks.prompt_import import import_prompts
from tests.conftest import needs_bubblewrap

KEY_VAR = "ROUTERBENCH_TEST_KEY"
# A prompt the fault server echoes back as a one-line program; its gold (the tests) keeps the
# sandbox busy for a moment, so the grading worker can be seen in the process list.
PROGRAM = "def f(): return 1"
TESTS = "import time\ntime.sleep(1.5)\nassert f() == 1"


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout, env=env)


def code_store(tmp_path: Path, n: int = 4) -> Store:
    path = tmp_path / "code.jsonl"
    pd.DataFrame({"sample_id": [f"c{i}" for i in range(n)], "prompt": PROGRAM, "gold": TESTS, "task": "code"}).to_json(path, orient="records", lines=True)
    store = Store(tmp_path / "store")
    import_prompts(store, "generic", path, grader="code-exec")
    return store


def config_file(tmp_path: Path, url: str) -> Path:
    doc = {
        "name": "keyed-model", "provider": "openai_compatible", "model": "fault-model", "base_url": url, "api_key_env": KEY_VAR,
        "limits": {"timeout_s": 5.0, "backoff_s": 0.01, "max_backoff_s": 0.05, "max_concurrency": 4},
        "sampling": {"max_tokens": len(PROGRAM.split())},
    }  # fmt: skip
    path = tmp_path / "keyed.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_held_key_travels_with_the_config_and_shows_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_VAR, key)
    config = ModelConfig(name="m", provider="openai", model="x", api_key_env=KEY_VAR)
    held = config.holding_key()
    monkeypatch.delenv(KEY_VAR)
    assert held.api_key() == key and config.api_key() is None
    assert key not in repr(held) and key not in held.model_dump_json() and key not in str(held.model_dump())
    assert pickle.loads(pickle.dumps(held)).api_key() == key  # what a Ray actor receives
    assert KEY_VAR in key_variables() and {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} <= key_variables()


def test_extend_with_an_unset_key_is_one_line_before_ray_starts(tmp_path: Path) -> None:
    store = code_store(tmp_path)
    ray_tmp = tmp_path / "rt"  # where a Ray started by the command would put its session
    env = {**{k: v for k, v in os.environ.items() if k != KEY_VAR}, "RAY_TMPDIR": str(ray_tmp)}
    done = cli("extend", "--model", str(config_file(tmp_path, "http://127.0.0.1:9/v1")), "--store", store.uri, env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and KEY_VAR in lines[0] and "is not set" in lines[0] and "keyed.yaml" in lines[0]
    assert "Traceback" not in done.stderr and "ray" not in done.stderr.lower()
    assert not ray_tmp.exists()  # no Ray started: an unset key used to surface as 221 lines of Ray tracebacks
    assert store.outcomes().empty


def test_code_grading_refuses_without_bubblewrap_unless_unsafe(tmp_path: Path) -> None:
    store = code_store(tmp_path)
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = {**os.environ, KEY_VAR: "k", "PATH": str(empty_path)}  # no bwrap on PATH
    done = cli("extend", "--model", str(config_file(tmp_path, "http://127.0.0.1:9/v1")), "--store", store.uri, env=env)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "bubblewrap" in done.stderr and "apt-get install bubblewrap" in done.stderr and "--unsafe-sandbox" in done.stderr
    check = cli("sandbox", "check", env=env)
    assert check.returncode == 2 and "bubblewrap" in check.stdout and "NO" in check.stdout
    unsafe = build_grader("code-exec", unsafe_sandbox=True)
    assert unsafe.id == "code-exec@1+unsafe-sandbox" and build_grader("code-exec").id == "code-exec@1"
    with pytest.warns(UserWarning, match="unsafe-sandbox"):
        assert unsafe.grade_batch(["```python\ndef f():\n    return 1\n```"], ["assert f() == 1"])[0].score == 1.0


@needs_bubblewrap
def test_sandbox_check_reports_every_layer() -> None:
    done = cli("sandbox", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    for layer in ("user namespace", "PID namespace", "empty environment", "mount namespace", "network namespace", "audit hook"):
        assert layer in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "sandbox ok: code-exec grading runs in bubblewrap"


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit():
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found, frontier = [], [root]
    while frontier:
        kids = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += kids
        frontier = kids
    return found


@pytest.mark.slow
@needs_bubblewrap
def test_no_process_but_the_driver_holds_the_key_during_a_real_extend(tmp_path: Path) -> None:
    """`routerbench extend` with the key in its environment, as a user runs it: while it runs, every
    process under it (Ray's, the grading worker, the sandbox) is read through /proc. Only the
    driver may hold the key; the engine gets it with its config (the server accepts only it)."""
    key = f"sk-{uuid.uuid4().hex}"
    store = code_store(tmp_path)
    with FaultServer(FaultPlan(completion_tokens=len(PROGRAM.split()), api_key=key)) as server:
        env = {**os.environ, KEY_VAR: key}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "extend", "--model", str(config_file(tmp_path, server.url)), "--store", store.uri],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        driver = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        holders: set[str] = set()
        graders_seen = 0
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            for pid in _descendants(proc.pid):
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                graders_seen += "grade_batch" in cmdline
                # A fork of the driver between fork and exec is still the driver (same image and memory).
                if key.encode() in environ and cmdline != driver:
                    holders.add(cmdline[:160])
            time.sleep(0.05)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert graders_seen, "the grading worker was never seen running"
    assert not holders, f"processes other than the driver held the key: {holders}"
    outcomes = Store(store.uri).outcomes()
    assert len(outcomes) == 4 and (outcomes["score"] == 1.0).all(), outcomes[["sample_id", "score", "error"]]
    assert (outcomes["grader"] == "code-exec@1").all()
    assert key not in output
