"""Read pandas pickles without running what they say: a restricted unpickler.

Unpickling calls whatever callables the file names, so ``pd.read_pickle`` on a downloaded file
runs the downloader's code (``__reduce__`` → ``os.system``). Here every global a pickle names is
checked against :data:`ALLOWED`, exact ``(module, name)`` pairs of the numpy/pandas/pyarrow
reconstructors a DataFrame of numbers, strings, missing values and timestamps needs, as pickled
by pandas 2 (numpy 1 or 2) and pandas 3 (found by tracing ``find_class`` on their pickles,
protocols 2-5). Anything else is refused with a :class:`UserError` naming the file and the global.

Admitted functions are handed out as fresh ``functools.partial`` wrappers and admitted classes
and objects are checked after loading, so a pickle cannot rebind attributes of pandas' own
classes (the ``BUILD`` opcode sets attributes of whatever object precedes it). pyarrow arrays are
validated in full as they are rebuilt, since their buffers come straight from the file.

Old-pandas renames (``pandas.compat.pickle_compat``) are applied before the check, and a pickle
the fast C unpickler cannot rebuild is retried with pandas' compat unpickler, as
``pd.read_pickle`` does; the allow-list stays in front of both. gzip, bz2 and xz files are
recognised by their magic bytes.
"""

from __future__ import annotations

import _compat_pickle
import bz2
import functools
import gzip
import lzma
import pickle
import warnings
from pathlib import Path
from typing import IO, Any, Callable

from pandas.compat import pickle_compat

from harness.errors import UserError

_NUMPY = [
    *((f"numpy.{core}.multiarray", n) for core in ("core", "_core") for n in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
]
_BUILTINS = [("builtins", "slice"), ("builtins", "bytearray"), ("_codecs", "encode"), ("datetime", "timedelta"), ("datetime", "timezone")]
# (pandas 2 home, pandas 3 public home) of each class; both spellings occur in real files.
_PANDAS_CLASSES = {
    "DataFrame": "pandas.core.frame",
    "Series": "pandas.core.series",
    "Index": "pandas.core.indexes.base",
    "RangeIndex": "pandas.core.indexes.range",
    "MultiIndex": "pandas.core.indexes.multi",
    "DatetimeIndex": "pandas.core.indexes.datetimes",
    "Timestamp": "pandas._libs.tslibs.timestamps",
    "NA": "pandas._libs.missing",
    "StringDtype": "pandas.core.arrays.string_",
    "BooleanDtype": "pandas.core.arrays.boolean",
    "DatetimeTZDtype": "pandas.core.dtypes.dtypes",
    **{f"{k}{b}Dtype": "pandas.core.arrays.integer" for k in ("Int", "UInt") for b in (8, 16, 32, 64)},
    **{f"Float{b}Dtype": "pandas.core.arrays.floating" for b in (32, 64)},
}
_PANDAS_ARRAYS = {
    "StringArray": "pandas.core.arrays.string_",
    "ArrowStringArray": "pandas.core.arrays.string_arrow",
    "IntegerArray": "pandas.core.arrays.integer",
    "FloatingArray": "pandas.core.arrays.floating",
    "BooleanArray": "pandas.core.arrays.boolean",
    "DatetimeArray": "pandas.core.arrays.datetimes",
    "TimedeltaArray": "pandas.core.arrays.timedeltas",
}
_PANDAS = [
    *((home, n) for n, home in _PANDAS_CLASSES.items()),
    *(("pandas", n) for n in _PANDAS_CLASSES),
    *((home, n) for n, home in _PANDAS_ARRAYS.items()),
    *(("pandas.arrays", n) for n in _PANDAS_ARRAYS),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals.managers", "SingleBlockManager"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.datetimes", "_new_DatetimeIndex"),
    ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
    ("pandas._libs.tslibs.nattype", "_nat_unpickle"),
    ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"),
]
_PYARROW = [("pyarrow.lib", "_restore_array"), ("pyarrow.lib", "type_for_alias"), ("pyarrow.lib", "py_buffer")]
ALLOWED: frozenset[tuple[str, str]] = frozenset([*_NUMPY, *_BUILTINS, *_PANDAS, *_PYARROW])

_RENAMES: dict[tuple[str, str], tuple[str, str]] = getattr(pickle_compat, "_class_locations_map", {})
# How a compressed pickle starts, and what opens it.
_MAGIC: list[tuple[bytes, Callable[[Path], IO[bytes]]]] = [
    (b"\x1f\x8b", lambda p: gzip.open(p, "rb")),
    (b"BZh", lambda p: bz2.open(p, "rb")),
    (b"\xfd7zXZ\x00", lambda p: lzma.open(p, "rb")),
]


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 spellings (``__builtin__``), as ``pickle`` itself maps them for protocols < 3."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _validated_array(restore: Callable[..., Any]) -> Callable[..., Any]:
    def rebuild(*args: Any) -> Any:
        array = restore(*args)
        array.validate(full=True)  # offsets and lengths come from the file: check them before use
        return array

    return rebuild


class _Restricted:
    """``find_class`` with the allow-list in front; mixed into the C and the pandas-compat unpickler."""

    file_name: str
    _watched: dict[int, tuple[object, dict[str, Any]]]

    def find_class(self, module: str, name: str) -> Any:
        key = _RENAMES.get(_py3_name(module, name), _py3_name(module, name))
        if key not in ALLOWED:
            raise UserError(
                f"{self.file_name}: refusing to unpickle {module}.{name} (not a class a DataFrame of numbers and "
                "strings needs); convert the file to CSV or Parquet if you trust it"
            )
        obj = super().find_class(*key)  # type: ignore[misc]
        if key == ("pyarrow.lib", "_restore_array"):
            return _validated_array(obj)
        if callable(obj) and not isinstance(obj, type):
            return functools.partial(obj)  # a fresh wrapper: BUILD on it cannot reach the shared function
        if hasattr(obj, "__dict__") and id(obj) not in self._watched:
            self._watched[id(obj)] = (obj, dict(vars(obj)))
        return obj

    def check_untouched(self) -> None:
        """Undo and refuse attribute changes the pickle made to admitted classes and objects."""
        for obj, before in self._watched.values():
            after = vars(obj)
            changed = sorted(k for k in set(before) | set(after) if k not in before or k not in after or after[k] is not before[k])
            if not changed:
                continue
            for k in changed:
                if k in before:
                    setattr(obj, k, before[k])
                else:
                    delattr(obj, k)
            raise UserError(
                f"{self.file_name}: refusing this pickle: it sets attribute(s) {', '.join(changed)} of "
                f"{getattr(obj, '__qualname__', type(obj).__qualname__)}, which no DataFrame pickle does"
            )


class _FastUnpickler(_Restricted, pickle.Unpickler):
    pass


class _CompatUnpickler(_Restricted, pickle_compat.Unpickler):
    pass


def _load(cls: type[_Restricted], handle: IO[bytes], file_name: str) -> Any:
    unpickler = cls(handle)  # type: ignore[call-arg]
    unpickler.file_name, unpickler._watched = file_name, {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Warning)  # numpy.core's and old pandas' deprecation notes
            return unpickler.load()  # type: ignore[attr-defined]
    finally:
        unpickler.check_untouched()


def unpickle_frame(path: Path, file_name: str | None = None) -> Any:
    """Unpickle ``path`` (plain, gzip, bz2 or xz) admitting only :data:`ALLOWED` globals.

    Like ``pd.read_pickle``, a file the standard unpickler cannot rebuild (classes pandas has
    since moved or changed) is read again with pandas' compat unpickler, still restricted.
    """
    name = file_name or path.name
    with open(path, "rb") as raw:
        head = raw.read(6)
    opener = next((open_ for magic, open_ in _MAGIC if head.startswith(magic)), lambda p: open(p, "rb"))
    with opener(path) as handle:
        try:
            return _load(_FastUnpickler, handle, name)
        except (AttributeError, ImportError, TypeError, ValueError):
            handle.seek(0)
            return _load(_CompatUnpickler, handle, name)
