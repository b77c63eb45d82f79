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
    from harness.dataset import Store
    from harness.importers import load_sources

    store = Store(tmp_path_factory.mktemp("store") / "rb")
    batch = load_sources([str(routerbench_dir)])
    store.append(batch.prompts, batch.outcomes, source="shared routerbench")
    return store


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (starting Ray costs seconds)."""
    import ray

    from harness.evaluate import init_ray

    init_ray(None)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads and default stores of a test never touch the user's home."""
    monkeypatch.setenv("ROUTERBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROUTERBENCH_STORE", str(tmp_path / "default-store"))
