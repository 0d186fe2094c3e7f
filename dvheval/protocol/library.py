"""The protocols shipped with dvheval, and loading a protocol by name or path."""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from pathlib import Path
from typing import Any

from dvheval.protocol.files import _read_bounded, _read_protocol_bytes
from dvheval.protocol.model import Protocol, ProtocolSummary
from dvheval.protocol.problems import ProtocolError, _hint


def shipped_protocol_dir() -> Any:
    """Folder of the protocols shipped with dvheval.

    The top-level ``protocols/`` folder of a source checkout when it exists,
    else the ``protocols`` folder inside the installed package.

    Returns
    -------
    pathlib.Path or importlib.resources.abc.Traversable
    """
    # this file is <checkout>/dvheval/protocol/library.py
    here = Path(__file__).resolve().parents[2] / "protocols"
    if here.is_dir():
        return here
    return importlib.resources.files("dvheval") / "protocols"


def _shipped_files() -> list[Any]:
    """The shipped protocol files (``.yaml``, ``.yml``), sorted by file name."""
    folder = shipped_protocol_dir()
    if not folder.is_dir():
        return []
    return sorted(
        (f for f in folder.iterdir() if f.name.endswith((".yaml", ".yml"))), key=lambda f: f.name
    )


def _stem(name: str) -> str:
    """A file name without its ``.yaml``/``.yml`` suffix."""
    return re.sub(r"\.ya?ml$", "", name)


def _resolve(name_or_path: str | Path) -> Any:
    """A path (has a separator or a .yaml/.yml suffix) or a shipped protocol's name."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or "\\" in text or re.search(
        r"\.ya?ml$", text, re.I
    ):
        path = Path(name_or_path)
        if not path.is_file():
            raise ProtocolError("no such protocol file", path)
        return path
    for f in _shipped_files():
        if _stem(f.name) == text:
            return f
    names = ", ".join(_stem(f.name) for f in _shipped_files()) or "none"
    raise ProtocolError(f"unknown protocol {text!r}{_hint(text, names.split(', '))}; "
                        f"shipped protocols: {names}")


def load_protocol(name_or_path: str | Path) -> Protocol:
    """Load and validate a protocol.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped protocol's name (``"bone-sib-30-40-10fx"``) or the path of
        a YAML file. A value with a path separator or a ``.yaml``/``.yml``
        suffix is a path.

    Returns
    -------
    Protocol

    Raises
    ------
    ProtocolError
        The first problem, with file, line and field; ``.errors`` holds all.
    """
    source = _resolve(name_or_path)
    data = _read_bounded(source)
    protocol, errors = _read_protocol_bytes(data, str(source))
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first = ProtocolError(
                f"{first.message} (and {len(errors) - 1} more problem(s))",
                first.file, first.line, first.field,
            )
        first.errors = errors
        raise first
    assert protocol is not None
    return protocol


def list_protocols() -> list[ProtocolSummary]:
    """The shipped protocols, sorted by name (invalid files carry ``error``).

    Returns
    -------
    list of ProtocolSummary
    """
    out = []
    for f in _shipped_files():
        try:
            data = _read_bounded(f)
        except ProtocolError as exc:
            out.append(ProtocolSummary(_stem(f.name), str(f), "", error=str(exc)))
            continue
        sha = hashlib.sha256(data).hexdigest()
        protocol, errors = _read_protocol_bytes(data, str(f))
        if errors or protocol is None:
            out.append(ProtocolSummary(_stem(f.name), str(f), sha, error=str(errors[0])))
            continue
        out.append(ProtocolSummary(
            name=protocol.name,
            file=str(f),
            sha256=sha,
            title=protocol.title,
            version=protocol.version,
            date=protocol.date,
            fractions=protocol.fractions,
            prescriptions={k: v.dose_gy for k, v in protocol.prescriptions.items()},
            constraints=sum(not c.is_report for c in protocol.constraints()),
        ))
    return out
