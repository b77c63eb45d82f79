"""Where input files come from: local files or directories, http(s) URLs, pyarrow filesystem URIs.

Remote files are downloaded once into a cache (``$ROUTERBENCH_CACHE`` or ``~/.cache/routerbench``)
with a progress bar; a download goes to a temporary name first, so an interrupted one is redone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from harness.errors import UserError

DATA_SUFFIXES = (".pkl", ".pickle", ".csv", ".parquet", ".jsonl", ".json")
CHUNK = 1 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("ROUTERBENCH_CACHE") or Path.home() / ".cache" / "routerbench")


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def _cached_path(spec: str) -> Path:
    name = Path(urlparse(spec).path).name or "download"
    digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    return cache_dir() / "downloads" / f"{digest}-{name}"


def _download(url: str, dest: Path, timeout: float = 60.0) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.part-{uuid.uuid4().hex[:8]}")
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
                task = progress.add_task(dest.name.split("-", 1)[-1], total=total)
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    progress.advance(task, len(chunk))
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        raise UserError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise UserError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _copy_from_filesystem(spec: str) -> list[Path]:
    fs, path = pafs.FileSystem.from_uri(spec)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{spec}: no such file or directory")
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(DATA_SUFFIXES))
    else:
        paths = [path]
    local = []
    for p in paths:
        dest = _cached_path(f"{spec}|{p}")
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            with fs.open_input_stream(p) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            os.replace(tmp, dest)
        local.append(dest)
    return local


def fetch(spec: str, refresh: bool = False) -> list[Path]:
    """Local paths of the data files that ``spec`` names (a directory expands to its data files)."""
    if is_url(spec):
        dest = _cached_path(spec)
        if refresh or not dest.exists():
            _download(spec, dest)
        return [dest]
    if "://" in spec:
        try:
            return _copy_from_filesystem(spec)
        except (pafs.ArrowInvalid, OSError) as exc:  # type: ignore[attr-defined]
            raise UserError(f"cannot read {spec}: {exc}") from exc
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(DATA_SUFFIXES))
        if not files:
            raise UserError(f"{spec}: directory holds no data files ({', '.join(DATA_SUFFIXES)})")
        return files
    if not path.exists():
        raise UserError(f"{spec}: no such file or directory")
    return [path]


def display_name(path: Path) -> str:
    """A short name for messages: the original file name, without the download cache prefix."""
    name = path.name
    if path.parent.name == "downloads" and "-" in name:
        return name.split("-", 1)[1]
    return name
