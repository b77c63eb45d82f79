"""Saved fits: ``serve --save-fit DIR`` writes each fitted route, ``serve --fit DIR`` loads them
instead of embedding the store and cross-validating again.

A saved fit may come from anywhere, so loading it must never run code. Per setting, DIR holds a
JSON manifest (what was fitted on what: setting, λ, pool, embedder, store versions, code versions)
and a ``.skops`` file of the router's fitted attributes only. The router object itself is never in
the file: it is built from the ``--routers`` setting through the registry, and the loaded
attributes are set on it. skops refuses every type it does not trust; we add exactly
:data:`EXTRA_TRUSTED`, declared here, never the types the file names. The manifest carries the
state file's SHA-256 (the state's file name holds it too, so a new state never overwrites the one
an older manifest names); the manifest is written last, and every file goes through a temporary
file and ``os.replace``, so a crash leaves the previous fit or none, never half of one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.serving.fitted import EMBED_TEXT, Embedder, FittedRoute
from harness.serving.setting import RouteSetting

FORMAT = "routerbench-saved-fit"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".fit.json"
STATE_SUFFIX = ".skops"
#: Fitted state that skops does not trust by default but the served routers' attributes hold
#: (skops already trusts numpy, builtins and sklearn's estimators): the MLP's Adam optimiser.
EXTRA_TRUSTED: tuple[str, ...] = ("sklearn.neural_network._stochastic_optimizers.AdamOptimizer",)
#: Router attributes that come from the setting, not from fitting.
NOT_STATE = frozenset({"options", "params"})
STATUSES = ("ok", "below-range", "above-range")
#: Code whose version decides what a loaded router predicts; a fit from other versions is refused.
CODE = ("routerbench", "scikit-learn", "numpy")


@dataclass(frozen=True)
class FitSource:
    """What the routes were fitted on (recorded in the manifest, not checked on load)."""

    store_uri: str
    store_versions: dict[str, int | None]
    families: list[str] | None = None  # --tasks (None: every family but traffic)


@dataclass(frozen=True)
class _Saved:
    stem: str
    manifest: dict[str, Any]
    state: bytes


def _versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in CODE}


def file_stem(setting: str) -> str:
    """A file name for a setting name (which holds ``:,=@``); the hash keeps two names apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", setting).strip("_.")[:80]
    return f"{readable}-{hashlib.sha256(setting.encode()).hexdigest()[:10]}"


def _checked_types(data: bytes, where: str) -> list[str]:
    """The non-default types of a skops payload, if all are declared trusted; else a UserError."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a corrupt file
        raise UserError(f"{where}: not a readable skops file ({type(exc).__name__}: {exc}); save the fit again with --save-fit") from None
    refused = [t for t in untrusted if t not in EXTRA_TRUSTED]
    if refused:
        raise UserError(f"{where}: refusing untrusted type '{refused[0]}'{f' (and {len(refused) - 1} more)' if len(refused) > 1 else ''}; a saved fit holds only numpy and scikit-learn state")
    return untrusted


def _dump(route: FittedRoute, embedder: Embedder, source: FitSource) -> _Saved:
    """A route as manifest + state bytes, or a UserError if its state cannot be saved safely."""
    import skops.io as sio

    setting = route.setting
    state = {k: v for k, v in vars(route.router).items() if k not in NOT_STATE}
    why = f"router '{setting.router}' (setting '{setting.name}')"
    try:
        data = sio.dumps(state)
    except Exception as exc:  # noqa: BLE001 - skops cannot represent it (a torch module, …)
        raise UserError(f"--save-fit: {why} has fitted state that cannot be saved safely ({type(exc).__name__}); serve it without --save-fit") from None
    try:
        trusted = _checked_types(data, f"--save-fit: {why}")
    except UserError as exc:
        raise UserError(f"{exc} — it cannot be saved; serve it without --save-fit") from None
    stem, digest = file_stem(setting.name), hashlib.sha256(data).hexdigest()
    cls = type(route.router)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "setting": setting.name,
        "router": setting.router,
        "router_class": f"{cls.__module__}.{cls.__qualname__}",
        "config": setting.config,
        "params": setting.params,
        "lambda": route.lam,
        "calibration": route.status,
        "models": list(route.models),
        "n_train": route.n_train,
        "embedder": {"name": embedder.name, "backend": embedder.backend, "text": EMBED_TEXT},
        "store": {"uri": source.store_uri, "versions": source.store_versions, "families": source.families},
        "code": _versions(),
        "state": {"file": f"{stem}-{digest[:12]}{STATE_SUFFIX}", "sha256": digest, "extra_trusted_types": trusted},
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return _Saved(stem, manifest, data)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_fits(directory: str | os.PathLike, routes: Sequence[FittedRoute], embedder: Embedder, source: FitSource) -> list[Path]:
    """One manifest + state per route in ``directory``; every route is serialised before any write."""
    saved = [_dump(r, embedder, source) for r in routes]
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        written = []
        for s in saved:
            state = root / s.manifest["state"]["file"]
            _write_atomic(state, s.state)
            manifest = root / (s.stem + MANIFEST_SUFFIX)
            _write_atomic(manifest, (json.dumps(s.manifest, indent=2) + "\n").encode())
            written.append(manifest)
            for old in root.glob(f"{s.stem}-*{STATE_SUFFIX}"):  # the previous fit's state, now unreferenced
                if old != state:
                    old.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"--save-fit {root}: cannot write there ({exc})") from None
    return written


def _field(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"{where}: field '{key}' is missing or not a {getattr(kind, '__name__', kind)} ({value!r}); save the fit again with --save-fit")
    return value


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a readable saved-fit manifest ({exc})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a saved-fit manifest (a JSON object)")
    if doc.get("format") != FORMAT:
        raise UserError(f"{path}: field 'format' is {doc.get('format')!r}, not '{FORMAT}'")
    if doc.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: field 'format_version' is {doc.get('format_version')!r}; this routerbench reads version {FORMAT_VERSION}, save the fit again with --save-fit")
    return doc


def _load_one(root: Path, path: Path, doc: dict[str, Any], setting: RouteSetting, models: Sequence[str], embedder: Embedder) -> FittedRoute:
    import skops.io as sio

    got = _field(doc, "models", list, str(path))
    if got != list(models):
        raise UserError(f"{path}: field 'models' is {got}, but --models gives {list(models)} (the same pool, in the same order)")
    emb = _field(doc, "embedder", dict, str(path))
    want = {"name": embedder.name, "backend": embedder.backend, "text": EMBED_TEXT}
    for key, value in want.items():
        if emb.get(key) != value:
            flag = {"name": "--embedder", "backend": "--embed-backend", "text": "the embedding text mode"}[key]
            raise UserError(f"{path}: field 'embedder.{key}' is {emb.get(key)!r}, but {flag} gives {value!r}")
    if _field(doc, "router", str, str(path)) != setting.router or _field(doc, "params", dict, str(path)) != json.loads(json.dumps(setting.params)):
        raise UserError(f"{path}: field 'params' is {doc.get('params')}, but setting '{setting.name}' means {setting.router} {setting.params}; save the fit again")
    code, here = _field(doc, "code", dict, str(path)), _versions()
    for name in CODE:
        if code.get(name) != here[name]:
            raise UserError(f"{path}: field 'code.{name}' is {code.get(name)!r}, this is {name} {here[name]}; a fit from other code may route differently, save it again with --save-fit")
    lam = float(_field(doc, "lambda", (int, float), str(path)))
    status = _field(doc, "calibration", str, str(path))
    n_train = _field(doc, "n_train", int, str(path))
    if not math.isfinite(lam) or lam < 0 or status not in STATUSES or n_train < 1:
        raise UserError(f"{path}: fields 'lambda', 'calibration', 'n_train' are {lam!r}, {status!r}, {n_train!r}: not a fit")
    meta = _field(doc, "state", dict, str(path))
    name = meta.get("file")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(STATE_SUFFIX):
        raise UserError(f"{path}: field 'state.file' is {name!r}, not a .skops file name in {root}")
    state_path = root / name
    try:
        data = state_path.read_bytes()
    except OSError as exc:
        raise UserError(f"{state_path}: cannot read the saved state ({exc})") from None
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise UserError(f"{state_path}: its SHA-256 differs from field 'state.sha256' of {path}: a corrupt or replaced file, save the fit again")
    trusted = _checked_types(data, str(state_path))
    try:
        state = sio.loads(data, trusted=trusted)
    except Exception as exc:  # noqa: BLE001 - a file skops parses but cannot rebuild is corrupt
        raise UserError(f"{state_path}: a corrupt saved state ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "cost" not in state or any(not isinstance(k, str) or k in NOT_STATE or k.startswith("__") for k in state):
        raise UserError(f"{state_path}: not a router's fitted attributes; save the fit again with --save-fit")
    router = setting.build()
    for key, value in state.items():
        setattr(router, key, value)
    return FittedRoute(setting, router, lam, tuple(models), n_train, status)


def load_fits(directory: str | os.PathLike, settings: Sequence[RouteSetting], models: Sequence[str], embedder: Embedder) -> list[FittedRoute]:
    """The saved fit of every setting, checked against the flags it is served with."""
    root = Path(directory)
    manifests = sorted(root.glob("*" + MANIFEST_SUFFIX)) if root.is_dir() else []
    if not manifests:
        raise UserError(f"--fit {root}: no saved-fit manifest (*{MANIFEST_SUFFIX}) there; write one with `routerbench serve … --save-fit {root}`")
    by_setting: dict[str, tuple[Path, dict[str, Any]]] = {}
    wanted = {s.name: s for s in settings}
    for path in manifests:
        doc = _read_manifest(path)
        name = _field(doc, "setting", str, str(path))
        if name not in wanted:
            raise UserError(f"{path}: field 'setting' is '{name}', which is not among --routers ({', '.join(wanted)}); add it or use a directory of these settings' fits")
        if name in by_setting:
            raise UserError(f"{path}: setting '{name}' is saved twice in {root} (also {by_setting[name][0].name})")
        by_setting[name] = (path, doc)
    missing = [n for n in wanted if n not in by_setting]
    if missing:
        raise UserError(f"--fit {root}: no saved fit for setting '{missing[0]}' (saved: {', '.join(by_setting)})")
    return [_load_one(root, *by_setting[s.name], s, models, embedder) for s in settings]
