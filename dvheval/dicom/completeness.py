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
#: The Item tag as encoded in implicit VR (always little endian).
_ITEM_LE = b"\xfe\xff\x00\xe0"
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
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


#: A collected event: (tag, value start, value length, enclosing sequence tag);
#: ``tag`` is :data:`ITEM` for an item of a collected sequence (then the
#: length is the item's, and the last field the sequence's tag).
Event = tuple[int, int, int, int]


class _Walker:
    """Walks one encoded data set; ``implicit`` and ``little`` give its encoding.

    ``collect`` names (tag, enclosing sequence tag) pairs whose elements are
    recorded in :attr:`events` (0 stands for the top level); items of a
    collected sequence are recorded too. :attr:`spans` holds where each
    top-level element starts and ends.
    """

    def __init__(self, buf: bytes, implicit: bool, little: bool,
                 collect: frozenset[tuple[int, int]] = frozenset()) -> None:
        self.buf = buf
        self.implicit = implicit
        order = "<" if little else ">"
        self._h = struct.Struct(order + "H").unpack_from
        self._i = struct.Struct(order + "I").unpack_from
        self._hh = struct.Struct(order + "HH").unpack_from
        self._hhi = struct.Struct(order + "HHI").unpack_from
        #: An element's tag, the two bytes of an explicit VR and a 2-byte length.
        self._header = struct.Struct(order + "HH2sH").unpack_from
        self.collect = collect
        #: Tags recorded in some sequence (or at the top level).
        self._watched = frozenset(t for t, _ in collect)
        self.events: list[Event] = []
        self.spans: dict[int, tuple[int, int]] = {}

    def _u16(self, pos: int) -> int:
        return int(self._h(self.buf, pos)[0])

    def _u32(self, pos: int) -> int:
        return int(self._i(self.buf, pos)[0])

    def _tag(self, pos: int) -> int:
        group, element = self._hh(self.buf, pos)
        return int(group << 16 | element)

    def dataset(self, pos: int, end: int, depth: int, in_item: bool, parent: int = 0) -> int:
        """Walk elements from ``pos`` to ``end``; return where the data set ends.

        In an item of undefined length the walk stops after its Item
        Delimitation Item, which must come before ``end``. ``parent`` is the
        tag of the enclosing sequence (0 at the top level).

        The common element (a value of defined length that cannot be a
        sequence) is skipped here, and recorded here if it is to be; the others
        go through :meth:`element`.
        """
        buf, long_vrs, watched, collect = self.buf, _LONG_VRS, self._watched, self.collect
        header, implicit_header = self._header, self._hhi
        implicit = self.implicit
        top = depth == 0
        while pos < end:
            if pos + 8 > end:
                raise Incomplete(f"an element header is cut off at byte {pos}")
            if implicit:
                group, elem, length = implicit_header(buf, pos)
                tag = group << 16 | elem
                # a defined length whose value does not start with an Item tag: never a
                # sequence (see _looks_like_sequence)
                plain = (length != UNDEFINED and pos + 8 + length <= end
                         and (length < 8 or buf[pos + 8:pos + 12] != _ITEM_LE))
            else:
                group, elem, vr, length = header(buf, pos)
                tag = group << 16 | elem
                # explicit VR, 2-byte length: never a sequence
                plain = vr not in long_vrs and pos + 8 + length <= end
            if plain and tag in watched and (tag, parent) in collect:
                self.events.append((tag, pos + 8, length, parent))
            if tag == ITEM_END:
                if not in_item:
                    raise Incomplete(f"an item delimiter outside an item at byte {pos}")
                return pos + 8
            if plain:
                nxt = pos + 8 + length
            else:
                nxt = self.element(pos, end, tag, depth, parent)
            if top:
                self.spans[tag] = (pos, nxt)
            pos = nxt
        if in_item:
            raise Incomplete("an item of undefined length has no end delimiter")
        return pos

    def element(self, pos: int, end: int, tag: int, depth: int, parent: int = 0) -> int:
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
        if self.collect and (tag, parent) in self.collect:
            self.events.append((tag, start, length, parent))
        if vr == b"SQ" or length == UNDEFINED:
            # a sequence, an implicit or UN sequence of undefined length, or
            # encapsulated pixel data: items up to a delimiter
            return self.sequence(start, end, length, depth + 1, tag)
        if start + length > end:
            raise Incomplete(f"the value of {_name(tag)} needs {length} bytes, "
                             f"{max(end - start, 0)} are left")
        if vr is None and self._looks_like_sequence(start, length, tag):
            self.sequence(start, start + length, length, depth + 1, tag)
        return start + length

    def _looks_like_sequence(self, start: int, length: int, tag: int) -> bool:
        """In implicit VR, a defined-length value that starts with an Item tag is a sequence,
        unless the data dictionary says the attribute is not one (pixel data whose first
        values happen to read as an Item tag)."""
        return length >= 8 and self._tag(start) == ITEM and _may_be_sequence(tag)

    def sequence(self, pos: int, end: int, length: int, depth: int, tag: int) -> int:
        """Walk the items of sequence ``tag`` (or encapsulated fragments); return its end."""
        if depth > MAX_DEPTH:
            raise Incomplete(f"sequences nested deeper than {MAX_DEPTH} levels")
        stop = end if length == UNDEFINED else pos + length
        if stop > end:
            raise Incomplete(f"the sequence {_name(tag)} needs {length} bytes, "
                             f"{end - pos} are left")
        collected = tag in self._watched
        fragments = tag == PIXEL_DATA
        while True:
            if length != UNDEFINED and pos == stop:
                return pos
            if pos + 8 > stop:
                what = "has no end delimiter" if length == UNDEFINED else "is cut off"
                raise Incomplete(f"the sequence {_name(tag)} {what}")
            group, element, item_length = self._hhi(self.buf, pos)
            item_tag = group << 16 | element
            if item_tag == SEQUENCE_END and length == UNDEFINED:
                return pos + 8
            if item_tag != ITEM:
                raise Incomplete(f"the sequence {_name(tag)} holds something other than "
                                 f"items at byte {pos}")
            pos += 8
            if collected:
                self.events.append((ITEM, pos, item_length, tag))
            if item_length == UNDEFINED:
                pos = self.dataset(pos, stop, depth, in_item=True, parent=tag)
            elif pos + item_length > stop:
                raise Incomplete(f"an item of {_name(tag)} needs {item_length} bytes, "
                                 f"{stop - pos} are left")
            else:
                if not fragments:
                    self.dataset(pos, pos + item_length, depth, in_item=False, parent=tag)
                pos += item_length


def _may_be_sequence(tag: int) -> bool:
    """False for an attribute the DICOM dictionary gives another VR than SQ."""
    from pydicom.datadict import dictionary_VR

    try:
        return "SQ" in dictionary_VR(tag)
    except KeyError:  # private or unknown: only its bytes can tell
        return True


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


def check_complete(path: str | Path) -> bytes:
    """The bytes of a DICOM file; refuse it when it is cut short or structurally broken.

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
    walk_encoded(buf, path)
    return buf


def walk_encoded(buf: bytes, path: Path, collect: frozenset[tuple[int, int]] = frozenset(),
                 ) -> tuple[list[Event], dict[int, tuple[int, int]]] | None:
    """Walk the encoded file ``buf`` (the bytes of ``path``), refusing it when incomplete.

    Parameters
    ----------
    buf : bytes
        The whole file.
    path : Path
        For messages.
    collect : frozenset of (tag, enclosing sequence tag)
        Elements to record (0 for the top level); items of a collected
        sequence are recorded too.

    Returns
    -------
    (events, spans) or None
        The collected :data:`Event` tuples in file order and where each
        top-level element starts and ends; None when the file is not walked
        (no preamble and ``DICM``, or a deflated data set).

    Raises
    ------
    InputError
        Naming the file and where the encoding breaks off.
    """
    if len(buf) < 132 or buf[128:132] != b"DICM":
        return None
    try:
        start, syntax = _meta_end(buf)
        if syntax == _DEFLATED:
            return None
        walker = _Walker(buf, implicit=syntax == _IMPLICIT, little=syntax != _BIG_ENDIAN,
                         collect=collect)
        walker.dataset(start, len(buf), 0, in_item=False)
    except (Incomplete, struct.error) as exc:
        raise InputError(f"incomplete or damaged file: {exc}; the file may have been cut "
                         "short (copy or transfer interrupted)", path) from exc
    return walker.events, walker.spans
