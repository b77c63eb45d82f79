"""Local paths and pyarrow filesystem URIs behind one small API.

The store and the importers speak paths inside a :class:`pyarrow.fs.FileSystem`, so a store can
live on local disk, ``file://``, ``s3://``, ``gs://`` or ``hdfs://`` without code changes.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs

from harness.errors import UserError


@dataclass(frozen=True)
class Location:
    """A filesystem and a path inside it."""

    fs: pafs.FileSystem
    path: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])


def resolve(uri: str | os.PathLike) -> Location:
    """Turn a local path or a URI (``s3://bucket/x``, ``file:///tmp/x``) into a :class:`Location`."""
    text = os.fspath(uri)
    if "://" not in text:
        return Location(pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text)))
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pafs.ArrowInvalid, OSError, ValueError) as exc:  # type: ignore[attr-defined]
        raise UserError(f"cannot open store location '{text}': {exc}") from exc
    return Location(fs, path)


def write_bytes_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing or the whole file.

    Local disk: a temporary file in the same directory, fsync, then rename. Object stores make a
    PUT visible only when complete, so a direct write is already atomic there.
    """
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return fh.read()


def list_names(fs: pafs.FileSystem, directory: str) -> list[str]:
    """Base names of the plain files directly in ``directory`` (empty when it does not exist)."""
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


def upload_dir(local_dir: str | os.PathLike, uri: str) -> None:
    """Copy a local directory's files to a location (e.g. evaluation results to ``s3://…``)."""
    target = resolve(uri)
    target.fs.create_dir(target.path, recursive=True)
    for name in sorted(os.listdir(local_dir)):
        src = os.path.join(local_dir, name)
        if os.path.isfile(src):
            with open(src, "rb") as fh:
                write_bytes_atomic(target.fs, target.join(name), fh.read())
