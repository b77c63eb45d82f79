"""Where input files come from: local files or directories, http(s) URLs, pyarrow filesystem URIs.

Remote files are downloaded once into a cache (``$ROUTERBENCH_CACHE`` or ``~/.cache/routerbench``)
with a progress bar; a download goes to a temporary name first, so an interrupted one is redone.
Each cached file keeps its original name (``downloads/<hash of the URL>/<name>``) and has its
sha256 beside it (``<name>.sha256``); ``--sha256`` checks a cached or new file against a digest
the user trusts, and a file that does not match is not kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from harness.errors import UserError
from harness.filesystem import check_reachable, resolve

DATA_SUFFIXES = (".pkl", ".pickle", ".csv", ".parquet", ".jsonl", ".json")
CHUNK = 1 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("ROUTERBENCH_CACHE") or Path.home() / ".cache" / "routerbench")


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _cached_path(spec: str) -> Path:
    name = Path(urlparse(spec).path).name or "download"
    digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    return cache_dir() / "downloads" / digest / name


def is_remote(spec: str) -> bool:
    """An http(s) URL or a pyarrow filesystem URI: fetched into the cache before it is read."""
    return "://" in spec


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digest_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def _record_digest(path: Path, hexdigest: str) -> None:
    tmp = path.with_name(f"{path.name}.sha256.part-{uuid.uuid4().hex[:8]}")
    tmp.write_text(f"{hexdigest}\n")
    os.replace(tmp, _digest_path(path))


def _expected_digest(value: str) -> str:
    digest = value.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise UserError(f"--sha256 must be 64 hexadecimal digits, not '{value}'")
    return digest


def url_digests(specs: Sequence[str], sha256: Sequence[str]) -> list[str | None]:
    """Pair each ``--sha256`` with a URL source, in order; local sources get none.

    Giving digests for some URLs only would leave it unclear which one a digest belongs to, so
    the counts must match.
    """
    remote = [i for i, spec in enumerate(specs) if is_remote(spec)]
    if sha256 and len(sha256) != len(remote):
        raise UserError(
            f"--sha256 given {len(sha256)} time(s) for {len(remote)} URL source(s); give one per URL source, in the order of the sources"
        )
    out: list[str | None] = [None] * len(specs)
    for i, value in zip(remote, sha256):
        out[i] = _expected_digest(value)
    return out


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part-{uuid.uuid4().hex[:8]}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with Progress(
                TextColumn("[bold]download[/] {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=True,
            ) as progress:
                task = progress.add_task(dest.name, total=total)
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    progress.advance(task, len(chunk))
        os.replace(tmp, dest)
        _record_digest(dest, digest.hexdigest())
    except urllib.error.HTTPError as exc:
        raise UserError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise UserError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _copy_from_filesystem(spec: str, refresh: bool = False) -> tuple[list[Path], bool]:
    """Cached copies of the data files ``spec`` names, and whether any was copied just now."""
    fs, path = pafs.FileSystem.from_uri(spec)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{spec}: no such file or directory")
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(DATA_SUFFIXES))
    else:
        paths = [path]
    local, fresh = [], False
    for p in paths:
        dest = _cached_path(f"{spec}|{p}")
        if refresh or not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            with fs.open_input_stream(p) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            os.replace(tmp, dest)
            _record_digest(dest, sha256_file(dest))
            fresh = True
        local.append(dest)
    return local, fresh


def _fetch_url(spec: str, refresh: bool) -> tuple[list[Path], bool]:
    dest = _cached_path(spec)
    fresh = refresh or not dest.exists()
    if fresh:
        _download(spec, dest)
    return [dest], fresh


def _fetch_uri(spec: str, refresh: bool) -> tuple[list[Path], bool]:
    try:
        return _copy_from_filesystem(spec, refresh)
    except (pafs.ArrowInvalid, OSError) as exc:  # type: ignore[attr-defined]
        raise UserError(f"cannot read {spec}: {exc}") from exc


def _discard(cached: Path) -> None:
    cached.unlink(missing_ok=True)
    _digest_path(cached).unlink(missing_ok=True)


def _verified(spec: str, paths: list[Path], expected: str, refetch: Callable[[], list[Path]] | None) -> list[Path]:
    """``paths`` if it is one file with digest ``expected``; a cached copy that is not gets one more fetch.

    A remote file that still does not match is removed from the cache, so nothing reads it later.
    """
    if len(paths) != 1:
        raise UserError(f"{spec}: --sha256 checks one file, but this source holds {len(paths)}")
    actual = sha256_file(paths[0])
    if actual != expected and refetch is not None:
        _discard(paths[0])  # a stale or damaged cached copy: fetch it once more
        paths = refetch()
        actual = sha256_file(paths[0])
    if actual != expected:
        if is_remote(spec):
            _discard(paths[0])
        kept = "; the download is not kept" if is_remote(spec) else ""
        raise UserError(f"{spec}: sha256 mismatch: expected {expected}, got {actual}{kept}")
    if is_remote(spec):
        _record_digest(paths[0], actual)
    return paths


def fetch(spec: str, refresh: bool = False, sha256: str | None = None) -> list[Path]:
    """Local paths of the data files that ``spec`` names (a directory expands to its data files).

    With ``sha256``, ``spec`` must name one file and that file must have this digest (a cached
    copy that does not is fetched again once before this fails).
    """
    expected = _expected_digest(sha256) if sha256 else None
    if is_remote(spec):
        if is_url(spec):
            get = _fetch_url
        else:
            check_reachable(resolve(spec), spec)  # endpoint down or no such bucket: one line, at once
            get = _fetch_uri
        paths, fresh = get(spec, refresh)
        if expected is None:
            return paths
        return _verified(spec, paths, expected, None if fresh else lambda: get(spec, True)[0])
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(DATA_SUFFIXES))
        if not files:
            raise UserError(f"{spec}: directory holds no data files ({', '.join(DATA_SUFFIXES)})")
        return _verified(spec, files, expected, None) if expected else files
    if not path.exists():
        raise UserError(f"{spec}: no such file or directory")
    return _verified(spec, [path], expected, None) if expected else [path]


def display_name(path: Path) -> str:
    """A short name for messages: the file's name (cached downloads keep the original one)."""
    return path.name
