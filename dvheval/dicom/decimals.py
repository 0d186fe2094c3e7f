"""Fast, exact parsing of DICOM Decimal String (DS) values straight from their bytes.

ContourData holds millions of numbers written as text. Building one Python
float per value is the slowest part of reading a large structure set, so
plain decimals (``-77.84``, ``105``, ``.5``) are parsed here with numpy in a
few passes over the bytes. The result is exactly what ``float()`` gives:
a value is its digits as a whole number divided by a power of ten, and
both are exact doubles (at most 15 digits, at most 22 decimals), so the one
division rounds correctly, as ``float()`` does.

Anything else (exponents, NaN, text, more than 15 digits, a misplaced sign
or point) makes :func:`parse_decimals` return None, and the caller parses
those values the slow, general way, with its own error messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

_MAX_DIGITS = 15
_MAX_DECIMALS = 22
#: Exact powers of ten as doubles (10**k is exact for k <= 22).
_POW10 = 10.0 ** np.arange(_MAX_DECIMALS + 1)
#: Bytes of raw values parsed together.
CHUNK_BYTES = 1 << 17


def parse_decimals(raws: Sequence[bytes | memoryview]) -> list[NDArray[np.float64]] | None:
    """Numbers of several backslash- or space-separated decimal strings.

    Parameters
    ----------
    raws : sequence of bytes or memoryview
        Raw values, e.g. the ContourData of the contours of one ROI (views
        into the file's bytes avoid copying them).

    Returns
    -------
    list of ndarray or None
        The numbers of each raw value (empty where a value holds none), or
        None when any value is not a plain decimal of at most 15 digits.
    """
    out: list[NDArray[np.float64]] = []
    first = 0
    while first < len(raws):  # blocks of about CHUNK_BYTES keep temporaries small
        last, size = first, 0
        while last < len(raws) and (last == first or size + len(raws[last]) <= CHUNK_BYTES):
            size += len(raws[last]) + 1
            last += 1
        block = _parse_block(raws[first:last])
        if block is None:
            return None
        out += block
        first = last
    return out


def _parse_block(raws: Sequence[bytes | memoryview]) -> list[NDArray[np.float64]] | None:
    """:func:`parse_decimals` of values joined into one buffer."""
    buf = np.frombuffer(b"\\".join(raws) + b"\\", dtype=np.uint8)
    # the characters of the fast path: digits, point, signs, backslash, space
    is_digit = (buf - np.uint8(48)) <= 9
    is_dot = buf == 46
    sign = (buf == 43) | (buf == 45)
    backslash = buf == 92
    sep = backslash | (buf == 32)
    if not np.all(is_digit | is_dot | sign | sep):
        return None
    # where each raw value starts in the buffer (each is followed by a backslash)
    lengths = np.fromiter((len(r) + 1 for r in raws), dtype=np.int64, count=len(raws))
    bounds = np.concatenate(([0], np.cumsum(lengths)))
    start = ~sep & np.concatenate(([True], sep[:-1]))
    end = ~sep & np.concatenate((sep[1:], [True]))  # last byte of each token
    starts = np.flatnonzero(start)
    counts = np.diff(np.searchsorted(starts, bounds))  # numbers in each raw value
    # exactly one number between backslashes (spaces only pad it): an empty
    # value or two numbers in one value are not plain decimals
    segment = np.cumsum(backslash, dtype=np.int32) - backslash  # value index of each byte
    per_value = np.bincount(segment[starts], minlength=int(segment[-1]) + 1)
    last_value_of_raw = segment[bounds[1:] - 1]
    per_value[last_value_of_raw[counts == 0]] = 1  # a raw value with no numbers at all is fine
    if np.any(per_value != 1):
        return None
    values = _token_values(buf, (is_digit, is_dot, sign), start, starts, np.flatnonzero(end))
    if values is None:
        return None
    return np.split(values, np.cumsum(counts)[:-1])


def _token_values(buf: NDArray[np.uint8],
                  kinds: tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]],
                  start: NDArray[np.bool_], starts: NDArray[np.intp], ends: NDArray[np.intp]
                  ) -> NDArray[np.float64] | None:
    """The value of each token (``start`` marks its first byte, ``starts`` and ``ends``
    hold its first and last), or None if one is not a plain decimal. ``kinds`` marks
    the digits, points and signs of ``buf``."""
    n = ends.size
    if n == 0:
        return np.zeros(0)
    is_digit, is_dot, sign = kinds
    # a sign only as the first character, at most one point, at least one digit
    if np.any(sign & ~start):
        return None
    token = np.cumsum(start, dtype=np.int32) - 1  # token of each byte
    cum = np.cumsum(is_digit, dtype=np.int32)  # digits up to and including each byte
    at_end = cum[ends]
    digits = np.diff(at_end, prepend=np.int32(0))
    dot_at = np.flatnonzero(is_dot)
    dot_token = token[dot_at]
    if np.any(np.diff(dot_token) == 0) or np.any(digits == 0) or np.any(digits > _MAX_DIGITS):
        return None
    where = np.flatnonzero(is_digit)
    digit_token = token[where]
    place = at_end[digit_token] - cum[where]  # digits after this one in its token
    mantissa = np.bincount(digit_token, weights=(buf[where] - 48) * _POW10[place],
                           minlength=n)
    decimals = np.zeros(n, dtype=np.intp)
    decimals[dot_token] = at_end[dot_token] - cum[dot_at]
    values = mantissa / _POW10[decimals]
    np.negative(values, out=values, where=buf[starts] == 45)
    return values
