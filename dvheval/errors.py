"""Exceptions raised by dvheval.

Every error that comes from the user's input carries the file (when one is
involved) and says what is wrong in words a physicist can act on.
"""

from __future__ import annotations

from pathlib import Path


class DvhevalError(Exception):
    """Base class of every error dvheval raises on purpose."""


class InputError(DvhevalError):
    """A DICOM file or folder cannot be used as given.

    Parameters
    ----------
    message : str
        What is wrong.
    path : str or Path, optional
        The file concerned; it is named first in the message.
    attribute : str, optional
        The DICOM attribute concerned, e.g. ``"GridFrameOffsetVector"``.
    """

    def __init__(
        self,
        message: str,
        path: str | Path | None = None,
        attribute: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.attribute = attribute
        self.message = message
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}")
        if attribute:
            parts.append(f"{attribute}")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class MetricError(DvhevalError, ValueError):
    """A DVH metric name cannot be parsed."""
