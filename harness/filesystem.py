"""Local paths and pyarrow filesystem URIs behind one small API.

The store and the importers speak paths inside a :class:`pyarrow.fs.FileSystem`, so a store can
live on local disk, ``file://``, ``s3://``, ``gs://`` or ``hdfs://`` without code changes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from harness.errors import UserError, first_line

PROBE_TIMEOUT_S = 5.0


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
        raise UserError(f"cannot open '{text}': {first_line(exc)}") from exc
    return Location(fs, path)


def delta_location(uri: str, location: Location) -> tuple[str, dict[str, str]]:
    """The root URI and storage options under which deltalake (delta-rs) finds the store at ``uri``.

    pyarrow takes an S3 endpoint and keys in the URI's query (``?endpoint_override=…&scheme=http``);
    delta-rs takes them as storage options. Keys given nowhere come from the environment, as for
    pyarrow. Commits on S3 use conditional puts (``If-None-Match``), so two writers never both
    create one version; set ``AWS_S3_LOCKING_PROVIDER`` to use a DynamoDB lock instead.
    """
    if location.is_local:
        return location.path, {}
    parts = urlsplit(uri)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    root = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    if parts.scheme != "s3":
        return root, query
    options: dict[str, str] = {}
    if "endpoint_override" in query:
        scheme = query.get("scheme", "https")
        options["AWS_ENDPOINT_URL"] = f"{scheme}://{query['endpoint_override']}"
        if scheme == "http":
            options["AWS_ALLOW_HTTP"] = "true"
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    for ours, theirs in (("access_key", "AWS_ACCESS_KEY_ID"), ("secret_key", "AWS_SECRET_ACCESS_KEY"), ("session_token", "AWS_SESSION_TOKEN")):
        if ours in query:
            options[theirs] = query[ours]
    if not os.environ.get("AWS_S3_LOCKING_PROVIDER"):
        options["conditional_put"] = "etag"
    return root, options


def is_directory(location: Location, rel: str) -> bool:
    return location.fs.get_file_info(location.join(rel)).type == pafs.FileType.Directory


@contextmanager
def storage_errors(uri: str) -> Iterator[None]:
    """Turn a filesystem failure under ``uri`` (endpoint down, no such bucket, no permission) into a
    one-line :class:`UserError` that names the URI."""
    try:
        yield
    except OSError as exc:
        raise UserError(f"{uri}: {first_line(exc)}") from exc


def check_reachable(location: Location, uri: str) -> None:
    """Fail fast, in one line, when an object store cannot be reached or its bucket does not exist.

    A single probe (HEAD of the bucket) with one attempt and short timeouts: pyarrow's default retry
    strategy would spend seconds on every call before the first error surfaced. Only S3 has a probe;
    other filesystems report their errors when used.
    """
    if not isinstance(location.fs, pafs.S3FileSystem):
        return
    options = dict(location.fs.__reduce__()[1][0])  # the URI's own settings (endpoint, scheme, region, keys)
    options.update(connect_timeout=PROBE_TIMEOUT_S, request_timeout=PROBE_TIMEOUT_S, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    bucket = location.path.split("/", 1)[0]
    try:
        info = pafs.S3FileSystem(**options).get_file_info(bucket)
    except OSError as exc:
        raise UserError(f"{uri}: cannot reach the object store ({first_line(exc)}); check the endpoint, credentials and network") from exc
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{uri}: bucket '{bucket}' does not exist; create it first or fix the bucket name")


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


def delete_if_present(fs: pafs.FileSystem, path: str) -> None:
    """Delete a file; one that is gone already (another cleanup got there first) is fine."""
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def upload_dir(local_dir: str | os.PathLike, uri: str, names: Iterable[str] | None = None) -> None:
    """Copy a local directory's files (or only ``names``) to a location (e.g. evaluation results to ``s3://…``)."""
    target = resolve(uri)
    check_reachable(target, uri)
    with storage_errors(uri):
        target.fs.create_dir(target.path, recursive=True)
        for name in sorted(os.listdir(local_dir) if names is None else names):
            src = os.path.join(local_dir, name)
            if os.path.isfile(src):
                with open(src, "rb") as fh:
                    write_bytes_atomic(target.fs, target.join(name), fh.read())


def download_files(uri: str, names: Iterable[str], local_dir: str | os.PathLike) -> list[str]:
    """Copy the named files of a location into a local directory; returns the names it does not hold."""
    source = resolve(uri)
    check_reachable(source, uri)
    missing = []
    with storage_errors(uri):
        for name in names:
            path = source.join(name)
            if source.fs.get_file_info(path).type != pafs.FileType.File:
                missing.append(name)
                continue
            with open(os.path.join(local_dir, name), "wb") as out:
                out.write(read_bytes(source.fs, path))
    return missing
