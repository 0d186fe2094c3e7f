"""Reading protocol files: bounded size, UTF-8 text, YAML, then the reader."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dvheval.protocol.model import Protocol
from dvheval.protocol.problems import ProtocolError
from dvheval.protocol.reader import _Reader
from dvheval.protocol.schema import MAX_FILE_BYTES
from dvheval.protocol.yaml_lines import _control_char_error, _parse_yaml


def _too_large(file: str, size: int | None) -> ProtocolError:
    """The error for a file above :data:`MAX_FILE_BYTES` (``size`` None when unknown)."""
    got = f"{size} bytes" if size is not None else f"more than {MAX_FILE_BYTES} bytes"
    return ProtocolError(f"the file is too large ({got}; a protocol may have at most "
                         f"{MAX_FILE_BYTES} bytes)", file)


def _read_bounded(source: Any) -> bytes:
    """The bytes of a protocol file, reading at most one byte past the size cap.

    Parameters
    ----------
    source : pathlib.Path or importlib.resources.abc.Traversable

    Raises
    ------
    ProtocolError
        The file cannot be read or is larger than :data:`MAX_FILE_BYTES`.
    """
    try:
        with source.open("rb") as fh:
            data: bytes = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ProtocolError(f"cannot read: {exc.strerror or exc}", str(source)) from exc
    if len(data) > MAX_FILE_BYTES:
        try:
            size = source.stat().st_size
        except (OSError, AttributeError):
            size = None
        raise _too_large(str(source), size)
    return data


def _read_protocol_bytes(data: bytes, file: str) -> tuple[Protocol | None, list[ProtocolError]]:
    """The protocol in ``data`` (read from ``file``) and every problem found.

    The protocol is None when there is any problem.
    """
    errors: list[ProtocolError] = []
    if len(data) > MAX_FILE_BYTES:
        return None, [_too_large(file, len(data))]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, [ProtocolError(f"not UTF-8 text ({exc.reason} at column {column}, byte "
                                    f"{exc.start})", file, line)]
    bad = _control_char_error(text, file)
    if bad is not None:
        return None, [bad]
    root = _parse_yaml(text, file, errors)
    if errors:
        return None, errors
    reader = _Reader(file)
    protocol = reader.build(root, hashlib.sha256(data).hexdigest())
    return protocol, reader.errors


def validate_protocol_file(path: str | Path) -> list[ProtocolError]:
    """Every problem of a protocol file; an empty list when it is valid.

    Parameters
    ----------
    path : str or Path
        The YAML file.

    Returns
    -------
    list of ProtocolError
        Each with ``file``, ``line`` (when known) and ``field``.
    """
    path = Path(path)
    try:
        data = _read_bounded(path)
    except ProtocolError as exc:
        return [exc]
    return _read_protocol_bytes(data, str(path))[1]
