"""``serve --save-fit`` / ``--fit``: a saved route routes exactly as the fitted one, every mismatch
with the serving flags is a one-line error naming the file and field, and a hostile directory
(a state naming ``os.system``, ``eval`` or ``subprocess.Popen``, a pickle, a path out of DIR) is
refused without running anything. Routes are fitted on small hand-made matrices, so no test embeds
a store; the ``build_plan`` tests stub the fitting and check that ``--fit`` never calls it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness.errors import UserError
from harness.generation.testing.configs import write_fault_config
from harness.serving import saved_fit, server
from harness.serving.fitted import Embedder, FittedRoute, fit_route
from harness.serving.saved_fit import FitSource, load_fits, save_fits
from harness.serving.setting import parse_setting, parse_settings
from tests.matrices import toy_matrix

sio = pytest.importorskip("skops.io")

MODELS = ("model-a", "model-b", "model-c")
EMB = Embedder("all-MiniLM-L6-v2", "fast")
SOURCE = FitSource("file:///store", {"prompts": 3, "outcomes": 7}, None)
#: Every served router whose fitted state is numpy + scikit-learn (mf, irt, dual-encoder hold torch modules).
SETTINGS = ["knn:k=5@lambda=1000", "knn:k=7@cost=0.004", "svm@lambda=300", "mlp:hidden=16@lambda=1000", "knn-cv@lambda=1000", "sw-ranking@lambda=1000", "carrot@lambda=1000"]


def _train(n: int = 90, d: int = 8, seed: int = 0):
    """Three clusters, each model best on one; dearer models are better, so λ matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 3
    group = np.arange(n) % 3
    x = centres[group] + rng.normal(size=(n, d))
    scores = (group[:, None] == np.arange(3)[None]).astype(float) * 0.8 + rng.random((n, 3)) * 0.2
    scores[rng.random((n, 3)) < 0.05] = np.nan  # a few missing outcomes (knn and svm take them)
    costs = np.tile([0.001, 0.004, 0.01], (n, 1)) * (1 + rng.random((n, 3)))
    return toy_matrix(scores, costs, x, models=MODELS), rng.normal(size=(64, d)) * 3


@pytest.fixture(scope="module")
def fitted() -> tuple[list[FittedRoute], np.ndarray]:
    train, probes = _train()
    return [fit_route(s, train, cv_folds=3) for s in parse_settings(SETTINGS)], probes


def _manifests(root: Path) -> dict[str, Path]:
    return {json.loads(p.read_text())["setting"]: p for p in root.glob("*.fit.json")}


def _saved(tmp_path: Path, routes: list[FittedRoute]) -> Path:
    save_fits(tmp_path / "fit", routes, EMB, SOURCE)
    return tmp_path / "fit"


def _load(root: Path, settings=SETTINGS, models=MODELS, emb=EMB) -> list[FittedRoute]:  # noqa: ANN001
    return load_fits(root, parse_settings(list(settings)), models, emb)


def _refused(says: str, root: Path, **kw) -> str:  # noqa: ANN003
    with pytest.raises(UserError) as err:
        _load(root, **kw)
    msg = str(err.value)
    assert says in msg and "\n" not in msg, msg
    return msg


def _plant_state(root: Path, setting: str, data: bytes) -> Path:
    """Replace a setting's state by ``data`` and fix the manifest's hash: what an attacker controls."""
    manifest = _manifests(root)[setting]
    doc = json.loads(manifest.read_text())
    (root / doc["state"]["file"]).write_bytes(data)
    doc["state"]["sha256"] = hashlib.sha256(data).hexdigest()
    manifest.write_text(json.dumps(doc))
    return root / doc["state"]["file"]


def _edit(root: Path, setting: str, **fields) -> None:  # noqa: ANN003
    manifest = _manifests(root)[setting]
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), **fields}))


# ---------------------------------------------------------------------- round trip
def test_a_loaded_fit_routes_exactly_like_the_fitted_one(tmp_path: Path, fitted) -> None:
    routes, probes = fitted
    root = _saved(tmp_path, routes)
    loaded = _load(root)
    assert [r.setting.name for r in loaded] == SETTINGS
    for before, after in zip(routes, loaded):
        assert (after.lam, after.status, after.models, after.n_train) == (before.lam, before.status, before.models, before.n_train)
        assert type(after.router) is type(before.router) and after.router.params == before.router.params
        assert after.decide(probes) == before.decide(probes)  # model, predicted quality and cost, bit for bit
    assert len({d.model for r in loaded for d in r.decide(probes)}) > 1  # the probes are not all routed alike
    calibrated = loaded[SETTINGS.index("knn:k=7@cost=0.004")]
    assert calibrated.lam == routes[1].lam and calibrated.lam != 0.004  # λ as cross-validation chose it, not refitted


def test_the_manifest_says_what_was_fitted_on_what(tmp_path: Path, fitted) -> None:
    routes, _ = fitted
    root = _saved(tmp_path, routes)
    doc = json.loads(_manifests(root)["svm@lambda=300"].read_text())
    assert (doc["format"], doc["format_version"], doc["router"], doc["router_class"]) == ("routerbench-saved-fit", 1, "svm", "routers.svm.SVMRouter")
    assert (doc["lambda"], doc["models"], doc["n_train"], doc["calibration"]) == (300.0, list(MODELS), routes[SETTINGS.index("svm@lambda=300")].n_train, "ok")
    assert doc["embedder"] == {"name": EMB.name, "backend": EMB.backend, "text": "plain"}
    assert doc["store"] == {"uri": "file:///store", "versions": {"prompts": 3, "outcomes": 7}, "families": None}
    assert set(doc["code"]) == {"routerbench", "scikit-learn", "numpy"}
    mlp = json.loads(_manifests(root)["mlp:hidden=16@lambda=1000"].read_text())
    assert mlp["state"]["extra_trusted_types"] == ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]
    assert not list(root.glob("*.tmp")) and len(list(root.glob("*.skops"))) == len(SETTINGS)


def test_saving_again_replaces_the_fit_and_leaves_no_stale_state(tmp_path: Path, fitted) -> None:
    routes, probes = fitted
    root = _saved(tmp_path, routes[:1])
    train, _ = _train(seed=1)
    refit = fit_route(routes[0].setting, train)
    save_fits(root, [refit], EMB, SOURCE)
    assert len(list(root.glob("*.skops"))) == 1
    assert _load(root, settings=SETTINGS[:1])[0].decide(probes) == refit.decide(probes)


def test_a_crash_between_state_and_manifest_keeps_the_previous_fit(tmp_path: Path, fitted, monkeypatch: pytest.MonkeyPatch) -> None:
    routes, probes = fitted
    root = _saved(tmp_path, routes[:1])
    train, _ = _train(seed=2)
    real = os.replace

    def crash_on_manifest(src, dst):  # noqa: ANN001, ANN202
        if str(dst).endswith(".fit.json"):
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(saved_fit.os, "replace", crash_on_manifest)
    with pytest.raises(UserError, match="cannot write there"):
        save_fits(root, [fit_route(routes[0].setting, train)], EMB, SOURCE)
    monkeypatch.undo()
    assert not list(root.glob("*.tmp"))
    assert _load(root, settings=SETTINGS[:1])[0].decide(probes) == routes[0].decide(probes)


def test_a_router_whose_state_cannot_be_saved_safely_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    train, _ = _train()
    routes = [fit_route(parse_setting("knn:k=5@lambda=1000"), train), fit_route(parse_setting("mf@lambda=1000"), train)]
    with pytest.raises(UserError) as err:
        save_fits(tmp_path / "fit", routes, EMB, SOURCE)
    assert "router 'mf'" in str(err.value) and "without --save-fit" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "fit").exists()  # not even the knn route: every route is serialised first


# ---------------------------------------------------------------------- mismatches
def test_mismatches_with_the_serving_flags_are_one_line_errors(tmp_path: Path, fitted) -> None:
    routes, _ = fitted
    root = _saved(tmp_path, routes)
    _refused("no saved-fit manifest", tmp_path / "empty")
    _refused("field 'setting' is 'svm@lambda=300', which is not among --routers", root, settings=[s for s in SETTINGS if s != "svm@lambda=300"])
    _refused("no saved fit for setting 'knn:k=9@lambda=1'", root, settings=[*SETTINGS, "knn:k=9@lambda=1"])
    _refused("field 'models' is ['model-a', 'model-b', 'model-c'], but --models gives ['model-b', 'model-a', 'model-c']", root, models=("model-b", "model-a", "model-c"))
    _refused("field 'embedder.name' is 'all-MiniLM-L6-v2', but --embedder gives 'other'", root, emb=Embedder("other", "fast"))
    _refused("field 'embedder.backend' is 'fast', but --embed-backend gives 'torch'", root, emb=Embedder(EMB.name, "torch"))


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"format_version": 2}, "field 'format_version' is 2"),
        ({"format": "pickle"}, "field 'format' is 'pickle'"),
        ({"params": {"k": 6, "metric": "cosine"}}, "field 'params'"),
        ({"code": {"routerbench": "0.0.1", "scikit-learn": "0", "numpy": "0"}}, "field 'code.routerbench' is '0.0.1'"),
        ({"lambda": "1000"}, "field 'lambda' is missing or not a"),
        ({"state": {"file": "../elsewhere.skops", "sha256": "0"}}, "field 'state.file' is '../elsewhere.skops'"),
    ],
)
def test_a_bad_manifest_field_is_named(tmp_path: Path, fitted, fields: dict, says: str) -> None:
    root = _saved(tmp_path, fitted[0][:1])
    _edit(root, SETTINGS[0], **fields)
    msg = _refused(says, root, settings=SETTINGS[:1])
    assert ".fit.json" in msg


def test_corrupt_files_are_refused(tmp_path: Path, fitted) -> None:
    root = _saved(tmp_path, fitted[0][:1])
    manifest = _manifests(root)[SETTINGS[0]]
    state = root / json.loads(manifest.read_text())["state"]["file"]
    good = state.read_bytes()
    state.write_bytes(good[: len(good) // 2])
    _refused("SHA-256 differs", root, settings=SETTINGS[:1])
    _plant_state(root, SETTINGS[0], good[: len(good) // 2])  # truncated, with a matching hash
    _refused("not a readable skops file", root, settings=SETTINGS[:1])
    _plant_state(root, SETTINGS[0], sio.dumps([1, 2]))  # valid skops, not a router's state
    _refused("not a router's fitted attributes", root, settings=SETTINGS[:1])
    manifest.write_text("{ broken")
    _refused("not a readable saved-fit manifest", root, settings=SETTINGS[:1])


# ---------------------------------------------------------------------- hostile files
@pytest.mark.parametrize("callable_", [os.system, eval, __import__], ids=["os.system", "eval", "__import__"])
def test_a_state_naming_a_callable_is_refused_by_name(tmp_path: Path, fitted, callable_) -> None:  # noqa: ANN001
    root = _saved(tmp_path, fitted[0][:1])
    _plant_state(root, SETTINGS[0], sio.dumps({"cost": callable_}))
    name = f"{callable_.__module__}.{callable_.__name__}"
    _refused(f"refusing untrusted type '{name}'", root, settings=SETTINGS[:1])


def _schema_zip(schema: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
    return buf.getvalue()


def test_a_crafted_popen_or_pickle_runs_nothing(tmp_path: Path, fitted) -> None:
    marker = tmp_path / "pwned"
    root = _saved(tmp_path, fitted[0][:1])
    popen = {
        "__class__": "Popen", "__module__": "subprocess", "__loader__": "ObjectNode", "__id__": 1,
        "content": {"__class__": "dict", "__module__": "builtins", "__loader__": "DictNode", "__id__": 2, "content": {
            "args": {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(f"touch {marker}"), "is_json": True, "__id__": 3},
        }, "key_types": {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": [], "__id__": 4}},
        "protocol": 2, "_skops_version": "0.16.0",
    }  # fmt: skip
    _plant_state(root, SETTINGS[0], _schema_zip(popen))
    _refused("refusing untrusted type 'subprocess.Popen'", root, settings=SETTINGS[:1])

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    _plant_state(root, SETTINGS[0], pickle.dumps(Payload()))  # a pickle posing as skops
    _refused("not a readable skops file", root, settings=SETTINGS[:1])
    assert not marker.exists()


# ---------------------------------------------------------------------- build_plan and the CLI
@pytest.fixture
def plan_args(tmp_path: Path, fitted, monkeypatch: pytest.MonkeyPatch):
    """build_plan's arguments over three fake upstreams; fitting is stubbed (counted)."""
    routes, _ = fitted
    calls: list[int] = []

    def fake_fit_routes(store, settings, models, embedder, families=None):  # noqa: ANN001, ANN202
        calls.append(1)
        by_name = {r.setting.name: r for r in routes}
        return [by_name[s.name] for s in settings]

    monkeypatch.setattr(server, "fit_routes", fake_fit_routes)
    paths = [write_fault_config(tmp_path, "http://127.0.0.1:9", m) for m in MODELS]
    return {"store_uri": str(tmp_path / "store"), "settings": SETTINGS, "model_configs": paths, "embedder": EMB.name, "embed_backend": EMB.backend}, calls


def test_build_plan_saves_then_loads_without_fitting(tmp_path: Path, plan_args, fitted) -> None:
    args, calls = plan_args
    routes, probes = fitted
    server.build_plan(**args, save_fit=tmp_path / "fit")
    assert calls == [1] and set(_manifests(tmp_path / "fit")) == set(SETTINGS)
    plan = server.build_plan(**args, fit=tmp_path / "fit")
    assert calls == [1]  # loading neither embeds nor fits
    assert [r.decide(probes) for r in plan.routes] == [r.decide(probes) for r in routes]
    with pytest.raises(UserError, match="give one"):
        server.build_plan(**args, fit=tmp_path / "fit", save_fit=tmp_path / "fit")


def test_cli_serve_loads_a_fit_and_reports_a_bad_one_in_one_line(tmp_path: Path, plan_args, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    args, calls = plan_args
    server.build_plan(**args, save_fit=tmp_path / "fit")

    def no_serve(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise UserError("not starting Serve in a test")

    monkeypatch.setattr(server, "start", no_serve)
    base = ["serve", "--store", args["store_uri"], "--embedder", EMB.name, "--embed-backend", EMB.backend, "--fit", str(tmp_path / "fit")]
    base += [a for p in args["model_configs"] for a in ("--models", str(p))]
    ok = CliRunner().invoke(app, [*base, *(a for s in SETTINGS for a in ("--routers", s))])
    assert "not starting Serve" in str(ok.exception) and f"loaded from {tmp_path / 'fit'}" in ok.output and calls == [1]
    bad = CliRunner().invoke(app, [*base, "--routers", SETTINGS[0]])
    assert isinstance(bad.exception, UserError) and "not among --routers" in str(bad.exception)
