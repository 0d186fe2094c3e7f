"""Reading a DICOM file and its attributes, with every bad value refused by name.

Every helper raises :class:`~dvheval.errors.InputError` naming the file and
the attribute, so that a damaged file is refused instead of giving a wrong
result.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.errors import InvalidDicomError

from dvheval.dicom.completeness import check_complete
from dvheval.errors import InputError

#: Largest plausible absolute patient coordinate (mm) of a grid or contour.
MAX_COORDINATE_MM = 1.0e5


def read_dataset(path: Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """The whole dataset of ``path`` (the file is read once).

    Raises
    ------
    InputError
        When the file cannot be read as DICOM, or is cut short or damaged
        (see :func:`~dvheval.dicom.completeness.check_complete`; pydicom
        itself reads a truncated file without complaint).
    """
    return dataset_from_bytes(check_complete(path), path, stop_before_pixels)


def read_file_bytes(path: Path) -> bytes:
    """The bytes of ``path``; an unreadable file is an InputError naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc})", path) from exc


@contextmanager
def sha256_while(buf: bytes) -> Iterator[Callable[[], str]]:
    """Hash ``buf`` in a thread while the block runs; the call it gives waits
    for the thread and returns the hex digest.

    hashlib releases the interpreter lock while it hashes, so a file's
    digest is computed while it is being parsed, from the very bytes that
    are parsed. Leaving the block waits for the thread, also on errors, so
    that no thread outlives the reading.
    """
    digest = hashlib.sha256()
    worker = threading.Thread(target=digest.update, args=(buf,), daemon=True)
    worker.start()

    def result() -> str:
        worker.join()
        return digest.hexdigest()

    try:
        yield result
    finally:
        worker.join()


def dataset_from_bytes(buf: bytes, path: Path, stop_before_pixels: bool = False
                       ) -> pydicom.Dataset:
    """The dataset encoded in ``buf`` (the bytes of ``path``, already checked
    complete by :func:`~dvheval.dicom.completeness.walk_encoded`)."""
    try:
        return pydicom.dcmread(BytesIO(buf), stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read DICOM file ({exc})", path) from exc


def get_value(ds: pydicom.Dataset, keyword: str, path: Path, where: str = "") -> Any:
    """``ds.get(keyword)``, with a value pydicom cannot convert refused as an InputError."""
    try:
        return ds.get(keyword)
    except (ValueError, OverflowError, TypeError) as exc:
        raise InputError(f"{where}the value cannot be read ({exc})", path, keyword) from exc


def require(ds: pydicom.Dataset, keyword: str, path: Path) -> Any:
    """The value of a required attribute; missing or empty is an InputError."""
    value = get_value(ds, keyword, path)
    if value is None or (hasattr(value, "__len__") and len(value) == 0 and value != 0):
        raise InputError("required attribute is missing or empty", path, keyword)
    return value


def shown(value: object, limit: int = 60) -> str:
    """A raw attribute value as short text for a message."""
    if isinstance(value, bytes | bytearray):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def floats(ds: pydicom.Dataset, keyword: str, path: Path, count: int | None = None,
           where: str = "") -> NDArray[np.float64]:
    """A required numeric attribute as finite floats.

    Raises
    ------
    InputError
        When the attribute is missing, holds text that is not a number, has
        not ``count`` values, or holds NaN or infinity.
    """
    value = require(ds, keyword, path)
    items = [value] if isinstance(value, str | bytes) or not hasattr(value, "__iter__") \
        else list(value)
    try:
        out = np.array([float(v) for v in items], dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}{shown(value)!r} is not a list of numbers", path,
                         keyword) from exc
    if count is not None and out.size != count:
        raise InputError(f"{where}must have {count} value(s), has {out.size} "
                         f"({shown(value)})", path, keyword)
    if not np.all(np.isfinite(out)):
        raise InputError(f"{where}holds a value that is not a finite number ({shown(value)})",
                         path, keyword)
    return out


def integer(ds: pydicom.Dataset, keyword: str, path: Path, *, required: bool = True,
            lo: int | None = None, hi: int | None = None, where: str = "") -> int | None:
    """A single whole-number attribute, optionally within ``[lo, hi]``.

    Returns None when the attribute is absent or empty and not required.

    Raises
    ------
    InputError
        When it is missing (and required), not one whole number, or out of range.
    """
    value = get_value(ds, keyword, path, where)
    if value is None or (isinstance(value, str | bytes) and not value.strip()):
        if required:
            raise InputError(f"{where}required attribute is missing or empty", path, keyword)
        return None
    number = None
    if isinstance(value, int | float | str):
        try:
            as_float = float(value)
        except ValueError:
            as_float = float("nan")
        if np.isfinite(as_float) and as_float == int(as_float):
            number = int(as_float)
    if number is None:
        raise InputError(f"{where}{shown(value)!r} is not a whole number", path, keyword)
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = (f"at least {lo}" if hi is None else f"at most {hi}" if lo is None
                  else f"from {lo} to {hi}")
        raise InputError(f"{where}{number} is out of range (must be {bounds})", path, keyword)
    return number


def required_integer(ds: pydicom.Dataset, keyword: str, path: Path, *,
                     lo: int | None = None, hi: int | None = None, where: str = "") -> int:
    """:func:`integer` of a required attribute (never None)."""
    number = integer(ds, keyword, path, lo=lo, hi=hi, where=where)
    assert number is not None  # a required attribute is never None
    return number
