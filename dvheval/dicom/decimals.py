"""Fast, exact parsing of DICOM Decimal String (DS) values straight from their bytes.

ContourData holds millions of numbers written as text. Building one Python
float per value is the slowest part of reading a large structure set, so
plain decimals (``-77.84``, ``105``, ``.5``, ``-1.5e-1``) are parsed here with
numpy: a few passes over the bytes find the numbers, which are then read a
character position at a time, all of them at once. The result is exactly what ``float()``
gives: a value is its digits as a whole number times or divided by a power
of ten, both exact doubles (at most 15 digits, a power of at most 22), so the
one multiplication or division rounds correctly, as ``float()`` does.

Anything else (NaN, text, more than 15 digits, an exponent of more than 3
digits or one that leaves a power beyond 22, a misplaced sign, point or
exponent) makes :func:`parse_decimals` give None for that value and the
others parsed with it (a block of about :data:`CHUNK_BYTES`), and the caller
parses those the slow, general way, with its own error messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

_MAX_DIGITS = 15
_MAX_EXPONENT_DIGITS = 3
_MAX_POWER = 22
#: Longest plain decimal: a sign, 15 digits, a point, an e, its sign and 3 digits.
_MAX_TOKEN = 1 + _MAX_DIGITS + 1 + 1 + 1 + _MAX_EXPONENT_DIGITS
#: Exact powers of ten as doubles (10**k is exact for k <= 22).
_POW10 = 10.0 ** np.arange(_MAX_POWER + 1)
#: The bytes of plain decimals without exponent and of their separators.
_PLAIN_BYTES = np.zeros(256, dtype=np.bool_)
_PLAIN_BYTES[np.frombuffer(b"0123456789.+-\\ ", dtype=np.uint8)] = True
#: Bytes of raw values parsed together.
CHUNK_BYTES = 1 << 17


def parse_decimals(raws: Sequence[bytes | memoryview]) -> list[NDArray[np.float64] | None]:
    """Numbers of several backslash- or space-separated decimal strings.

    Parameters
    ----------
    raws : sequence of bytes or memoryview
        Raw values, e.g. the ContourData of the contours of one ROI (views
        into the file's bytes avoid copying them).

    Returns
    -------
    list of ndarray or None
        The numbers of each raw value (empty where a value holds none). The
        values are parsed in blocks of about :data:`CHUNK_BYTES`; every value
        of a block that holds one value other than plain decimals of at most
        15 digits is None, for the caller to parse the general way.
    """
    out: list[NDArray[np.float64] | None] = []
    first = 0
    while first < len(raws):  # blocks of about CHUNK_BYTES keep temporaries small
        last, size = first, 0
        while last < len(raws) and (last == first or size + len(raws[last]) <= CHUNK_BYTES):
            size += len(raws[last]) + 1
            last += 1
        block = _parse_block(raws[first:last])
        out += [None] * (last - first) if block is None else block
        first = last
    return out


def _parse_block(raws: Sequence[bytes | memoryview]) -> list[NDArray[np.float64]] | None:
    """:func:`parse_decimals` of values joined into one buffer."""
    buf = np.frombuffer(b"\\".join(raws) + b"\\", dtype=np.uint8)
    # the characters of the fast path: digits, point, signs, exponent, backslash, space
    known = _PLAIN_BYTES.take(buf)
    sign = (buf == 43) | (buf == 45)
    backslash = buf == 92
    sep = backslash | (buf == 32)
    is_e = None
    if not np.all(known):
        is_e = (buf | np.uint8(32)) == 101  # e or E
        if not np.all(known | is_e):
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
    values = _token_values(buf, sign, is_e, start, starts, np.flatnonzero(end))
    if values is None:
        return None
    return np.split(values, np.cumsum(counts)[:-1])


def _token_values(buf: NDArray[np.uint8], sign: NDArray[np.bool_],
                  is_e: NDArray[np.bool_] | None, start: NDArray[np.bool_],
                  starts: NDArray[np.intp], ends: NDArray[np.intp]
                  ) -> NDArray[np.float64] | None:
    """The value of each token (``start`` marks its first byte, ``starts`` and ``ends``
    hold its first and last), or None if one is not a plain decimal. ``sign`` and
    ``is_e`` mark the signs and exponent letters of ``buf`` (None: there are none).

    The tokens are read a character position at a time, all tokens at once: the
    significand accumulates its digits (``10 * s + d``, exact below 2**53), and
    the digits after the point give the power of ten to divide by.
    """
    n = ends.size
    if n == 0:
        return np.zeros(0)
    power = np.zeros(n, dtype=np.intp)  # each value is significand * 10**power
    if is_e is None:
        # a sign only as the first character
        if np.any(sign & ~start):
            return None
    else:
        exponent = _exponents(buf, sign, is_e, start, starts, ends)
        if exponent is None:
            return None
        power = exponent
    length = ends - starts + 1
    width = int(length.max())
    if width > _MAX_TOKEN:
        return None
    significand = np.zeros(n)
    digits = np.zeros(n, dtype=np.int8)  # of the significand
    after_point = np.zeros(n, dtype=np.int8)  # digits after the point
    points = np.zeros(n, dtype=np.int8)
    seen_point = np.zeros(n, dtype=np.bool_)
    seen_e = None if is_e is None else np.zeros(n, dtype=np.bool_)
    at = starts.copy()
    for j in range(width):
        here = length > j
        c = buf.take(at, mode="clip")  # (beyond the buffer only where not ``here``)
        at += 1
        d = c - np.uint8(48)
        digit = (d <= 9) & here
        if seen_e is not None:
            seen_e |= ((c | np.uint8(32)) == 101) & here
            digit &= ~seen_e  # the exponent's digits are not the significand's
        point = (c == 46) & here
        significand = np.where(digit, significand * 10.0 + d, significand)
        digits += digit
        after_point += digit & seen_point
        seen_point |= point
        points += point
    # at most one point, at least one digit, at most 15 digits
    if np.any(points > 1) or np.any(digits == 0) or np.any(digits > _MAX_DIGITS):
        return None
    power -= after_point
    if is_e is None:  # power <= 0 here: at most 15 digits after a point
        values = significand / _POW10[-power]
    else:
        if np.any(np.abs(power) > _MAX_POWER):
            return None
        up = power >= 0
        values = np.divide(significand, _POW10[np.where(up, 0, -power)])
        np.multiply(significand, _POW10[np.where(up, power, 0)], out=values, where=up)
    np.negative(values, out=values, where=buf[starts] == 45)
    return values


def _exponents(buf: NDArray[np.uint8], sign: NDArray[np.bool_], is_e: NDArray[np.bool_],
               start: NDArray[np.bool_], starts: NDArray[np.intp], ends: NDArray[np.intp]
               ) -> NDArray[np.intp] | None:
    """Each token's exponent (0 without one); None when an exponent is misplaced or malformed:
    more than one ``e``, an ``e`` first in its token, anything after it but a
    sign and then 1 to 3 digits, a sign that is neither first nor right after
    an ``e``.

    Exponents are rare, so only the few bytes after each ``e`` are looked at.
    """
    n = ends.size
    e_at = np.flatnonzero(is_e)
    e_token = np.searchsorted(starts, e_at, side="right") - 1  # the token of each e
    if np.any(np.diff(e_token) == 0) or np.any(start[e_at]):
        return None
    # the bytes after each e up to the end of its token, one row per e
    first = e_at + 1
    length = ends[e_token] + 1 - first
    if np.any(length < 1) or np.any(length > 1 + _MAX_EXPONENT_DIGITS):
        return None
    offset = np.arange(1 + _MAX_EXPONENT_DIGITS)
    inside = offset < length[:, None]
    at = np.where(inside, first[:, None] + offset, first[:, None])
    ch = buf[at]
    signed = (ch[:, 0] == 43) | (ch[:, 0] == 45)
    digit_here = ((ch - np.uint8(48)) <= 9) & inside
    allowed = digit_here | ~inside
    allowed[:, 0] |= signed
    count = digit_here.sum(axis=1)
    if not np.all(allowed) or np.any(count == 0) or np.any(count > _MAX_EXPONENT_DIGITS):
        return None
    # a sign elsewhere than first in a token must be right after an e
    stray = np.flatnonzero(sign & ~start)
    if stray.size:
        pos = np.minimum(np.searchsorted(first, stray), first.size - 1)
        if first.size == 0 or np.any(first[pos] != stray):
            return None
    place = length[:, None] - 1 - offset  # digits after this one in the exponent
    value = np.where(digit_here, (ch - np.uint8(48)) * _POW10[np.maximum(place, 0)], 0.0)
    exponent = np.zeros(n, dtype=np.intp)
    magnitude = value.sum(axis=1).astype(np.intp)
    exponent[e_token] = np.where(ch[:, 0] == 45, -magnitude, magnitude)
    return exponent
