"""Shared fixtures: the real RouterBench sample in ../shared/data, stores, and one local Ray."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROUTERBENCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
ROUTERBENCH_DIR = SHARED_DATA / "routerbench"

if str(ROOT) not in sys.path:  # bench/ holds the reference ports that parity tests compare with
    sys.path.insert(0, str(ROOT))


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set ROUTERBENCH_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def routerbench_dir() -> Path:
    return require_shared(ROUTERBENCH_DIR)


@pytest.fixture(scope="session")
def imported_store(tmp_path_factory: pytest.TempPathFactory, routerbench_dir: Path):
    """A store holding the shared RouterBench CSVs (read-only for tests: copy before writing)."""
    from harness.store import Store
    from harness.outcome_import import load_sources

    store = Store(tmp_path_factory.mktemp("store") / "rb")
    batch = load_sources([str(routerbench_dir)])
    store.append(batch.prompts, batch.outcomes, source="shared routerbench")
    return store


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (starting Ray costs seconds)."""
    import ray

    from harness.ray_runtime import ensure_ray

    ensure_ray(None)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads and default stores of a test never touch the user's home."""
    monkeypatch.setenv("ROUTERBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROUTERBENCH_STORE", str(tmp_path / "default-store"))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_args(num_cpus: float, resources: str) -> list[str]:
    """`ray start` arguments every test node takes: 127.0.0.1, its agents' ports explicit, its resources."""
    return [
        "--node-ip-address", "127.0.0.1", "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
        "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
        "--disable-usage-stats", "--num-cpus", f"{num_cpus:g}", "--resources", resources,
    ]  # fmt: skip


def start_ray_head(
    temp_dir: str, num_cpus: int = 2, resources: str = '{"sandbox": 2}', extra_env: dict | None = None, extra_args: list[str] = (), gcs_port: int | None = None
) -> dict:
    """`ray start --head` on 127.0.0.1 with its own ``--temp-dir`` and every port explicit (a local
    Ray of this test session holds the defaults, e.g. the agent's 52365), from this environment (so
    a job's `routerbench` is this checkout's), token auth off (Ray 2.60 turns it on by default).
    Stop it with :func:`tests.ray_processes.stop_ray` on its recorded ``procs``."""
    import subprocess

    bin_dir = Path(sys.executable).parent
    ray_cli = bin_dir / "ray"
    if not ray_cli.exists():
        pytest.skip("the ray CLI is not installed next to this Python")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled", **(extra_env or {})}
    gcs, dashboard = gcs_port or free_port(), free_port()
    start = [
        str(ray_cli), "start", "--head", "--port", str(gcs),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard=true",
        "--ray-client-server-port", str(free_port()), *_node_args(num_cpus, resources), "--temp-dir", temp_dir, *extra_args,
    ]  # fmt: skip
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    from tests.ray_processes import ray_processes

    address = f"http://127.0.0.1:{dashboard}"
    # the PIDs to stop, recorded now, while the only processes naming this temp dir are this head's
    procs = ray_processes(temp_dir)
    return {"address": address, "gcs": f"127.0.0.1:{gcs}", "env": {**env, "RAY_ADDRESS": address}, "ray": str(ray_cli), "temp_dir": temp_dir, "procs": procs}


def start_ray_worker(head: dict, num_cpus: float, resources: str, object_store_memory: int = 200 * 2**20) -> str:
    """`ray start --address` one more node of ``head``'s cluster on this machine, with its own resources;
    returns its node id. Its processes live in the head's temp dir (:func:`tests.ray_processes.ray_processes`)."""
    import subprocess
    import time

    before = _alive_nodes(head)
    start = [head["ray"], "start", "--address", head["gcs"], *_node_args(num_cpus, resources), "--object-store-memory", str(object_store_memory)]
    subprocess.run(start, env=head["env"], check=True, capture_output=True, timeout=180)
    deadline = time.monotonic() + 120
    while not (new := _alive_nodes(head) - before):
        assert time.monotonic() < deadline, "the worker node did not join"
        time.sleep(0.5)
    return new.pop()


def _alive_nodes(head: dict) -> set[str]:
    from ray.util.state import list_nodes

    return {n.node_id for n in list_nodes(address=head["address"], filters=[("state", "=", "ALIVE")], limit=1000)}


@pytest.fixture(scope="session")
def ray_head():
    """A real Ray head on 127.0.0.1 for `ray job submit` (:func:`start_ray_head`)."""
    import shutil
    import tempfile

    from tests.ray_processes import stop_ray

    temp_dir = tempfile.mkdtemp(prefix="rbh-", dir="/tmp")  # Ray's socket paths must stay short
    head = start_ray_head(temp_dir)
    try:
        yield head
    finally:
        stop_ray(head["procs"])  # this head's processes only: `ray stop` would end every Ray on the machine
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_job(head: dict, entrypoint: list[str], working_dir: Path = ROOT, timeout: float = 1200):
    """`ray job submit --working-dir … -- entrypoint`; waits and returns the finished process."""
    import subprocess

    import time

    cmd = [head["ray"], "job", "submit", "--address", head["address"], "--working-dir", str(working_dir), "--", *entrypoint]
    deadline = time.monotonic() + 120
    while True:  # right after `ray start` the job agent may not be up yet
        done = subprocess.run(cmd, env=head["env"], capture_output=True, text=True, timeout=timeout)
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(2)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on 127.0.0.1, with dummy keys in the environment (which
    CLI subprocesses inherit). Yields an object with ``uri(bucket, path)`` for pyarrow URIs,
    ``client`` (boto3) and ``make_bucket(name)``."""
    import subprocess
    import time
    from types import SimpleNamespace

    pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the test extra) for the S3 tests")
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port}") from None
                time.sleep(0.2)
        yield SimpleNamespace(
            port=port,
            endpoint=endpoint,
            client=client,
            uri=lambda bucket, path="": f"s3://{bucket}/{path}?endpoint_override=127.0.0.1:{port}&scheme=http",
            make_bucket=lambda name: client.create_bucket(Bucket=name),
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _bubblewrap_skip() -> pytest.MarkDecorator:
    """Skip where bubblewrap cannot run, except in CI (CI=true), which installs it: there a missing
    sandbox must fail the run, not hide the hostile-code suite."""
    from harness.grading.sandbox import capabilities

    caps = capabilities()
    missing = caps.bubblewrap is None and not os.environ.get("CI")
    return pytest.mark.skipif(missing, reason=f"bubblewrap cannot run here: {caps.bubblewrap_error} (`apt-get install bubblewrap`; CI installs it)")


needs_bubblewrap = _bubblewrap_skip()
