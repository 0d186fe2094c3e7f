"""Is a DICOM file complete? A walk over its encoded elements.

pydicom reads a file cut short without complaint: it stops at the end of
the bytes, so a structure set that lost its last contours, or a plan that
lost its last beams, reads as a smaller but valid-looking object. A plan must
never be judged on such a file. :func:`check_complete` walks the element
headers of the file (values are skipped, not decoded) and requires that

* every value lies wholly inside the file (and inside its enclosing item),
* every sequence and item of undefined length ends with its delimiter,
* the data set ends exactly at the end of the file.

A file cut exactly between two top-level elements is a complete, shorter
data set that no walk can tell from a whole one; the attributes it lost are
missing, and the readers refuse a plan whose needed attributes are missing.

The file meta information is Explicit VR Little Endian; the data set is read
in the transfer syntax the meta information names (Implicit or Explicit VR
Little Endian, or Explicit VR Big Endian). Deflated data sets are not walked.
"""

from __future__ import annotations

import struct
from pathlib import Path

from dvheval.errors import InputError

#: Value length meaning "undefined, ends with a delimiter".
UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
#: VRs whose explicit encoding has a 4-byte length after two reserved bytes.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_IMPLICIT = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
#: Deepest nesting of sequences accepted.
MAX_DEPTH = 64


class Incomplete(Exception):
    """The encoded data set is cut short or malformed; the text says where."""


class _Walker:
    """Walks one encoded data set; ``implicit`` and ``little`` give its encoding."""

    def __init__(self, buf: bytes, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.implicit = implicit
        self.order = "<" if little else ">"

    def _u16(self, pos: int) -> int:
        return int(struct.unpack_from(self.order + "H", self.buf, pos)[0])

    def _u32(self, pos: int) -> int:
        return int(struct.unpack_from(self.order + "I", self.buf, pos)[0])

    def _tag(self, pos: int) -> int:
        return (self._u16(pos) << 16) | self._u16(pos + 2)

    def dataset(self, pos: int, end: int, depth: int, in_item: bool) -> int:
        """Walk elements from ``pos`` to ``end``; return where the data set ends.

        In an item of undefined length the walk stops after its Item
        Delimitation Item, which must come before ``end``.
        """
        while pos < end:
            if pos + 8 > end:
                raise Incomplete(f"an element header is cut off at byte {pos}")
            tag = self._tag(pos)
            if tag == ITEM_END:
                if not in_item:
                    raise Incomplete(f"an item delimiter outside an item at byte {pos}")
                return pos + 8
            pos = self.element(pos, end, tag, depth)
        if in_item:
            raise Incomplete("an item of undefined length has no end delimiter")
        return pos

    def element(self, pos: int, end: int, tag: int, depth: int) -> int:
        """Skip one element starting at ``pos``; return the position after it."""
        if self.implicit:
            vr, length, start = None, self._u32(pos + 4), pos + 8
        else:
            vr = self.buf[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > end:
                    raise Incomplete(f"the header of {_name(tag)} is cut off")
                length, start = self._u32(pos + 8), pos + 12
            else:
                length, start = self._u16(pos + 6), pos + 8
        name = _name(tag)
        if vr == b"SQ" or (vr is None and length == UNDEFINED) or (
                vr == b"UN" and length == UNDEFINED):
            return self.sequence(start, end, length, depth + 1, name)
        if length == UNDEFINED:  # encapsulated pixel data: items up to a delimiter
            return self.sequence(start, end, length, depth + 1, name)
        if start + length > end:
            raise Incomplete(f"the value of {name} needs {length} bytes, "
                             f"{max(end - start, 0)} are left")
        if vr is None and self._looks_like_sequence(start, length):
            self.sequence(start, start + length, length, depth + 1, name)
        return start + length

    def _looks_like_sequence(self, start: int, length: int) -> bool:
        """In implicit VR, a defined-length value that starts with an Item tag is a sequence."""
        return length >= 8 and self._tag(start) == ITEM

    def sequence(self, pos: int, end: int, length: int, depth: int, name: str) -> int:
        """Walk the items of a sequence (or encapsulated fragments); return its end."""
        if depth > MAX_DEPTH:
            raise Incomplete(f"sequences nested deeper than {MAX_DEPTH} levels")
        stop = end if length == UNDEFINED else pos + length
        if stop > end:
            raise Incomplete(f"the sequence {name} needs {length} bytes, {end - pos} are left")
        while True:
            if length != UNDEFINED and pos == stop:
                return pos
            if pos + 8 > stop:
                what = "has no end delimiter" if length == UNDEFINED else "is cut off"
                raise Incomplete(f"the sequence {name} {what}")
            tag, item_length = self._tag(pos), self._u32(pos + 4)
            if tag == SEQUENCE_END and length == UNDEFINED:
                return pos + 8
            if tag != ITEM:
                raise Incomplete(f"the sequence {name} holds something other than items "
                                 f"at byte {pos}")
            pos += 8
            if item_length == UNDEFINED:
                pos = self.dataset(pos, stop, depth, in_item=True)
            elif pos + item_length > stop:
                raise Incomplete(f"an item of {name} needs {item_length} bytes, "
                                 f"{stop - pos} are left")
            else:
                if not self._is_fragment(name):
                    self.dataset(pos, pos + item_length, depth, in_item=False)
                pos += item_length

    @staticmethod
    def _is_fragment(name: str) -> bool:
        return name.startswith("(7FE0,0010)")


def _name(tag: int) -> str:
    """``(GGGG,EEEE) Keyword`` of a tag, e.g. ``(7FE0,0010) PixelData``."""
    from pydicom.datadict import keyword_for_tag

    keyword = keyword_for_tag(tag)
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{text} {keyword}" if keyword else text


def _meta_end(buf: bytes) -> tuple[int, str]:
    """Where the file meta information ends, and the transfer syntax it names."""
    walker = _Walker(buf, implicit=False, little=True)
    pos, syntax = 132, ""
    while pos + 8 <= len(buf) and walker._u16(pos) == 0x0002:
        tag = walker._tag(pos)
        nxt = walker.element(pos, len(buf), tag, 0)
        if tag == 0x00020010:
            start = nxt - walker._u16(pos + 6)
            syntax = buf[start:nxt].decode("ascii", "replace").strip("\x00 ")
        pos = nxt
    return pos, syntax


def check_complete(path: str | Path) -> None:
    """Refuse a DICOM file that is cut short or structurally broken.

    Raises
    ------
    InputError
        Naming the file and where the encoding breaks off. Files without the
        128-byte preamble and ``DICM``, and deflated data sets, are not walked.
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc})", path) from exc
    if len(buf) < 132 or buf[128:132] != b"DICM":
        return
    try:
        start, syntax = _meta_end(buf)
        if syntax == _DEFLATED:
            return
        walker = _Walker(buf, implicit=syntax == _IMPLICIT, little=syntax != _BIG_ENDIAN)
        walker.dataset(start, len(buf), 0, in_item=False)
    except (Incomplete, struct.error) as exc:
        raise InputError(f"incomplete or damaged file: {exc}; the file may have been cut "
                         "short (copy or transfer interrupted)", path) from exc
