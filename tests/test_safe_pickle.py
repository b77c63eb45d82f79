"""Pickles are never unpickled blindly: hostile files are refused with no side effect, real ones load.

Hostile pickles each try to create a marker file; the tests check it never appears, in process
and through the real ``routerbench`` CLI (local file, ``prompts import``, a loopback HTTP URL).
"""

from __future__ import annotations

import builtins
import gzip
import hashlib
import http.server
import io
import os
import pickle
import pickletools
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.store import Store
from harness.errors import UserError
from harness.outcome_import import load_sources
from harness.safe_pickle import unpickle_frame

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux


class System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return os.system, (f"touch {self.marker}",)


class Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


class Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return subprocess.Popen, (["touch", str(self.marker)],)


def nested(marker: Path) -> pd.DataFrame:
    """A RouterBench-looking frame whose object column holds a hostile object."""
    return pd.DataFrame(
        {"sample_id": ["a", "b"], "prompt": ["['x']", "['y']"], "eval_name": ["mbpp", "mbpp"], "m": [1.0, 0.0], "m|total_cost": [0.1, 0.1],
         "m|model_response": pd.Series(["['ok']", System(marker)], dtype=object)}
    )


HOSTILE = {"system": (System, SYSTEM), "eval": (Eval, "builtins.eval"), "popen": (Popen, "subprocess.Popen"), "nested": (nested, SYSTEM)}


def write_hostile(kind: str, path: Path, marker: Path) -> Path:
    make, _ = HOSTILE[kind]
    path.write_bytes(pickle.dumps(make(marker)))
    return path


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


def stored(store: Path) -> int:
    """Rows in the store at ``store`` (0 when the command never created it)."""
    if not store.exists():
        return 0
    st = Store(store)
    return len(st.prompts(["sample_id"])) + len(st.outcomes(["sample_id"]))


def assert_refused(rc: int, err: str, refused: str, marker: Path, store: Path) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and refused in lines[0] and "refusing to unpickle" in lines[0], err
    assert not marker.exists()
    assert stored(store) == 0


# ---------------------------------------------------------------------- hostile files, in process
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_pickle_is_refused_without_side_effect(kind: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_hostile(kind, tmp_path / "evil.pkl", marker)
    with pytest.raises(UserError, match=rf"^evil\.pkl: refusing to unpickle {HOSTILE[kind][1]} .*CSV or Parquet"):
        unpickle_frame(path)
    with pytest.raises(UserError, match=HOSTILE[kind][1]):
        load_sources([str(path)])
    gz = tmp_path / "evil.pickle"
    gz.write_bytes(gzip.compress(path.read_bytes()))  # compressed: still read through the same check
    with pytest.raises(UserError, match=HOSTILE[kind][1]):
        load_sources([str(gz)])
    assert not marker.exists()


def test_pickle_cannot_rebind_attributes_of_allowed_classes(tmp_path: Path) -> None:
    # GLOBAL pandas.Index, then BUILD with slot state {"probe": "hey"}: setattr on the class itself.
    path = tmp_path / "rebind.pkl"
    path.write_bytes(b"\x80\x04cpandas\nIndex\nN}\x8c\x05probe\x8c\x03hey\x73\x86b.")
    with pytest.raises(UserError, match=r"rebind\.pkl: refusing this pickle: it sets attribute\(s\) probe of Index"):
        unpickle_frame(path)
    assert not hasattr(pd.Index, "probe")


# ---------------------------------------------------------------------- hostile files, through the CLI
def test_cli_refuses_hostile_pickles_in_one_line(tmp_path: Path) -> None:
    runs = {}
    for kind in HOSTILE:
        marker, store = tmp_path / f"pwned-{kind}", tmp_path / f"store-{kind}"
        path = write_hostile(kind, tmp_path / f"evil_{kind}.pkl", marker)
        runs[kind] = (start_cli("import", str(path), "--store", str(store)), marker, store)
    for kind, (proc, marker, store) in runs.items():
        rc, _, err = finish(proc)
        assert_refused(rc, err, HOSTILE[kind][1], marker, store)
        assert f"evil_{kind}.pkl" in err


def test_cli_refuses_hostile_pickle_by_url_and_in_prompts_import(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    marker = tmp_path / "pwned"
    write_hostile("nested", root / "routerbench_0shot.pkl", marker)
    local = write_hostile("popen", tmp_path / "arc.pkl", marker)
    store = tmp_path / "store"
    procs = [
        (start_cli("import", f"{base}/routerbench_0shot.pkl", "--store", str(store)), SYSTEM),
        (start_cli("prompts", "import", "arc-challenge", str(local), "--store", str(store)), "subprocess.Popen"),
        (start_cli("prompts", "import", "winogrande", f"{base}/routerbench_0shot.pkl", "--store", str(store)), SYSTEM),
    ]
    for proc, refused in procs:
        rc, _, err = finish(proc)
        assert_refused(rc, err, refused, marker, store)


# ---------------------------------------------------------------------- real frames load
def test_pandas3_frames_load_equal_to_the_original(routerbench_dir: Path, tmp_path: Path) -> None:
    wide = pd.read_csv(routerbench_dir / "mbpp_test.csv", index_col=0).head(40)
    frames = {
        "routerbench": wide,
        "routerbench_object": wide.astype(object),
        "mixed": pd.DataFrame(
            {
                "s": ["a", None, "ç"],
                "f": [1.5, np.nan, -0.0],
                "i": np.array([1, 2, 3], dtype=np.int32),
                "b": [True, False, True],
                "n": pd.array([1, None, 3], dtype="Int64"),
                "t": pd.to_datetime(["2024-01-01", None, "2024-03-01"]),
                "o": pd.Series([["x"], ("y", "z"), np.float64(2.0)], dtype=object),
            },
            index=pd.Index(["r1", "r2", "r3"]),
        ),
    }
    for name, df in frames.items():
        for suffix in ("pkl", "pkl.gz", "pkl.bz2", "pkl.xz"):
            path = tmp_path / f"{name}.{suffix}"
            df.to_pickle(path)  # compression from the suffix; our reader goes by the magic bytes
            pd.testing.assert_frame_equal(unpickle_frame(path), df)
        for protocol in (2, 4):
            path.write_bytes(pickle.dumps(df, protocol=protocol))
            pd.testing.assert_frame_equal(unpickle_frame(path), df)


def test_pandas2_pickle_imports_like_its_csv() -> None:
    pkl, csv = FIXTURES / "routerbench_pandas2.pkl", FIXTURES / "routerbench_pandas2.csv"
    globals_named = {arg for op, arg, _ in pickletools.genops(pkl.read_bytes()) if op.name.endswith("UNICODE")}
    assert {"numpy.core.multiarray", "pandas.core.frame"} <= globals_named  # written by pandas 2 on numpy 1
    frame = unpickle_frame(pkl)
    expected = pd.read_csv(csv, index_col=0)
    pd.testing.assert_frame_equal(frame.astype(object), expected.astype(object), check_index_type=False, check_column_type=False)

    from_pkl, from_csv = load_sources([str(pkl)]), load_sources([str(csv)])
    assert (len(from_pkl.prompts), len(from_pkl.outcomes)) == (len(from_csv.prompts), len(from_csv.outcomes)) == (6, 11)
    assert from_pkl.missing_by_model == from_csv.missing_by_model == {"gpt-4-1106-preview": 1}
    pd.testing.assert_frame_equal(from_pkl.outcomes, from_csv.outcomes)
    columns = [c for c in from_csv.prompts.columns if c != "meta"]  # meta names the source file
    pd.testing.assert_frame_equal(from_pkl.prompts[columns], from_csv.prompts[columns])


# ---------------------------------------------------------------------- downloads and --sha256
def test_sha256_mismatch_fails_naming_both_digests_and_match_imports(
    routerbench_dir: Path, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    root, base = http_root
    pd.read_csv(routerbench_dir / "mbpp_test.csv").head(20).to_pickle(root / "mbpp.pkl")
    pd.read_csv(routerbench_dir / "arc_challenge_test.csv").head(30).to_pickle(root / "arc.pkl")
    good = hashlib.sha256((root / "mbpp.pkl").read_bytes()).hexdigest()
    arc_good = hashlib.sha256((root / "arc.pkl").read_bytes()).hexdigest()
    wrong = "0" * 64
    cache = Path(os.environ["ROUTERBENCH_CACHE"]) / "downloads"
    store = tmp_path / "store"

    bad = start_cli("import", f"{base}/mbpp.pkl", "--store", str(store), "--sha256", wrong)
    arc = start_cli("prompts", "import", "arc-challenge", f"{base}/arc.pkl", "--store", str(tmp_path / "arc-store"), "--sha256", arc_good)
    rc, _, err = finish(bad)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{base}/mbpp.pkl" in err and wrong in err and good in err
    assert stored(store) == 0 and not list(cache.glob("*/mbpp.pkl*"))  # the mismatching download is not kept
    rc, _, err = finish(arc)
    assert rc == 0, err
    assert len(Store(tmp_path / "arc-store").prompts(["sample_id"])) == 30
    (cached,) = cache.glob("*/arc.pkl")
    assert cached.with_name("arc.pkl.sha256").read_text().strip() == arc_good

    ok = start_cli("import", f"{base}/mbpp.pkl", "--store", str(store), "--sha256", good.upper())
    arc_bad = start_cli("prompts", "import", "arc-challenge", f"{base}/arc.pkl", "--store", str(tmp_path / "arc-store"), "--sha256", wrong)
    rc, _, err = finish(ok)
    assert rc == 0, err
    assert len(Store(store).outcomes(["sample_id"])) == 20 * 11
    (cached,) = cache.glob("*/mbpp.pkl")
    assert cached.with_name("mbpp.pkl.sha256").read_text().strip() == good
    rc, _, err = finish(arc_bad)  # the cached copy does not match: fetched again, still wrong, dropped
    assert rc == 2 and wrong in err and arc_good in err, err
    assert not list(cache.glob("*/arc.pkl*"))


def test_a_stale_cached_download_is_fetched_again_for_a_new_digest(routerbench_dir: Path, http_root: tuple[Path, str]) -> None:
    root, base = http_root
    df = pd.read_csv(routerbench_dir / "winograde_test.csv")
    df.head(10).to_pickle(root / "wino.pkl")
    assert len(load_sources([f"{base}/wino.pkl"]).prompts) == 10
    df.head(12).to_pickle(root / "wino.pkl")  # upstream changed; the user names the new digest
    new = hashlib.sha256((root / "wino.pkl").read_bytes()).hexdigest()
    assert len(load_sources([f"{base}/wino.pkl"]).prompts) == 10  # without a digest: the cache
    assert len(load_sources([f"{base}/wino.pkl"], sha256=[new]).prompts) == 12


def test_sha256_pairs_with_url_sources_in_order(routerbench_dir: Path, http_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base = http_root
    local = routerbench_dir / "mbpp_test.csv"
    buf = io.BytesIO()
    pd.read_csv(routerbench_dir / "winograde_test.csv").head(5).to_pickle(buf)
    (root / "w.pkl").write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    batch = load_sources([str(local), f"{base}/w.pkl"], sha256=[digest])  # the local file is not checked
    assert batch.prompts["task_family"].value_counts().to_dict() == {"mbpp": len(pd.read_csv(local)), "winogrande": 5}
    with pytest.raises(UserError, match=r"--sha256 given 2 time\(s\) for 1 URL source"):
        load_sources([str(local), f"{base}/w.pkl"], sha256=[digest, digest])
    with pytest.raises(UserError, match="--sha256 must be 64 hexadecimal digits, not 'abc'"):
        load_sources([f"{base}/w.pkl"], sha256=["abc"])
