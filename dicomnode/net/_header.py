"""A tiny scanner for the few header attributes the receiving edge needs, read from raw dataset bytes.

The C-STORE handler must know the Study, Series and SOP Instance UIDs, the SOP Class UID and the
Modality before it can choose where an instance goes, but decoding the whole dataset (or even
building a pydicom ``Dataset``) costs far more than reading five elements near its start. This
module walks the top-level elements of the encoded dataset, skipping values (and nested sequences)
without copying them, and stops at the first tag past (0020,000E).

It understands implicit VR little endian, explicit VR little and big endian, and (via
:class:`HeaderScanner`) the deflated explicit VR little endian transfer syntax.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["HeaderFields", "HeaderScanner", "MalformedDataset", "NeedMoreData", "check_dataset_file", "scan_header"]

# (group << 16 | element) of the wanted attributes
_SOP_CLASS = 0x00080016
_SOP_INSTANCE = 0x00080018
_MODALITY = 0x00080060
_STUDY = 0x0020000D
_SERIES = 0x0020000E
_WANTED = {_SOP_CLASS, _SOP_INSTANCE, _MODALITY, _STUDY, _SERIES}
_LAST_WANTED = _SERIES

_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF

# explicit VRs with a 2-byte reserved field and a 4-byte length
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})

_DEFLATED = "1.2.840.10008.1.2.1.99"
_IMPLICIT = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"

# Refuse to buffer more than this much header before giving up (a sane header is a few kB)
MAX_HEADER_BYTES = 16 * 1024 * 1024


class NeedMoreData(Exception):
    """The bytes seen so far end before the wanted attributes could be read."""


@dataclass(frozen=True, slots=True)
class HeaderFields:
    """The attributes read from a dataset's header; an empty string when absent.

    Attributes
    ----------
    sop_class_uid, sop_instance_uid, study_uid, series_uid : str
        UIDs with trailing padding removed (not yet checked against the UID grammar).
    modality : str
        Modality (0008,0060) without padding.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str


def _is_vr(vr: bytes) -> bool:
    return len(vr) == 2 and 65 <= vr[0] <= 90 and 65 <= vr[1] <= 90


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip("\x00 ").lstrip(" ")


def _skip_undefined(buf: memoryview, pos: int, implicit: bool, little: bool, *, in_sequence: bool) -> int:
    """Skip an undefined-length sequence (``in_sequence``) or item body; return the position after it."""
    end = len(buf)
    fmt_tag = "<HH" if little else ">HH"
    fmt_len = "<L" if little else ">L"
    while True:
        if pos + 8 > end:
            raise NeedMoreData
        group, elem = struct.unpack_from(fmt_tag, buf, pos)
        tag = group << 16 | elem
        if tag in (_ITEM, _ITEM_END, _SEQ_END):
            (length,) = struct.unpack_from(fmt_len, buf, pos + 4)
            pos += 8
            if tag == _SEQ_END or tag == _ITEM_END:
                return pos
            # an item inside a sequence
            if length == _UNDEFINED:
                pos = _skip_undefined(buf, pos, implicit, little, in_sequence=False)
            else:
                pos += length
            continue
        if in_sequence:
            raise ValueError(f"unexpected tag ({group:04X},{elem:04X}) inside a sequence")
        pos, _, _ = _element(buf, pos, implicit, little)


def _element(buf: memoryview, pos: int, implicit: bool, little: bool) -> tuple[int, int, int]:
    """Parse the element at `pos`; return (position after it, tag, value offset) and skip its value.

    Raises NeedMoreData when the element (or a nested sequence) runs past the end of `buf`.
    """
    end = len(buf)
    if pos + 8 > end:
        raise NeedMoreData
    group, elem = struct.unpack_from("<HH" if little else ">HH", buf, pos)
    tag = group << 16 | elem
    if implicit:
        (length,) = struct.unpack_from("<L", buf, pos + 4)
        value_at = pos + 8
        vr = b""
    else:
        vr = bytes(buf[pos + 4 : pos + 6])
        if not _is_vr(vr) and group != 0xFFFE:
            raise ValueError(f"no VR at byte {pos + 4} ({vr!r}): the data set is not explicit VR, or a length "
                             "before it is wrong")
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise NeedMoreData
            (length,) = struct.unpack_from("<L" if little else ">L", buf, pos + 8)
            value_at = pos + 12
        else:
            (length,) = struct.unpack_from("<H" if little else ">H", buf, pos + 6)
            value_at = pos + 8
    if length == _UNDEFINED:
        # SQ, UN (whose content is implicit VR LE, CP-246) or encapsulated pixel data
        nested_implicit = implicit or vr == b"UN"
        nested_little = little or vr == b"UN"
        return _skip_undefined(buf, value_at, nested_implicit, nested_little, in_sequence=True), tag, value_at
    after = value_at + length
    if after > end:
        raise NeedMoreData
    return after, tag, value_at


def scan_header(data: bytes | bytearray | memoryview, *, implicit: bool, little: bool, complete: bool) -> HeaderFields:
    """Read the wanted attributes from the start of an encoded (not deflated) dataset.

    Parameters
    ----------
    data : bytes-like
        The first bytes of the dataset (without file meta), or all of it.
    implicit : bool
        Implicit VR encoding.
    little : bool
        Little endian byte order.
    complete : bool
        Whether `data` is the whole dataset; if not, running out of bytes raises
        :class:`NeedMoreData` instead of reporting attributes as absent.

    Returns
    -------
    HeaderFields
        Absent attributes are empty strings.

    Raises
    ------
    NeedMoreData
        `data` ends before (0020,000E) was passed and `complete` is false.
    ValueError
        The bytes are not a dataset in the given encoding.
    """
    buf = memoryview(data).cast("B")
    found: dict[int, str] = {}
    pos = 0
    end = len(buf)
    tag_fmt = "<HH" if little else ">HH"
    previous = -1
    try:
        while True:
            if pos + 4 > end:
                if pos == end and complete:
                    break
                raise NeedMoreData
            group, elem = struct.unpack_from(tag_fmt, buf, pos)
            if (group << 16 | elem) <= previous:
                raise ValueError(f"element ({group:04X},{elem:04X}) at byte {pos} is out of order: a length before it"
                                 " is wrong")
            previous = group << 16 | elem
            if previous > _LAST_WANTED:
                break
            after, tag, value_at = _element(buf, pos, implicit, little)
            if tag in _WANTED:
                found[tag] = _text(bytes(buf[value_at:after]))
                if len(found) == len(_WANTED):
                    break
            pos = after
    except NeedMoreData:
        if not complete:
            raise
        if pos < end:
            raise ValueError(f"element at byte {pos} runs past the end of the data set (wrong length?)") from None
    except struct.error as exc:  # pragma: no cover - guarded by the length checks above
        raise ValueError(f"truncated element at byte {pos}") from exc
    return HeaderFields(
        sop_class_uid=found.get(_SOP_CLASS, ""),
        sop_instance_uid=found.get(_SOP_INSTANCE, ""),
        study_uid=found.get(_STUDY, ""),
        series_uid=found.get(_SERIES, ""),
        modality=found.get(_MODALITY, ""),
    )


class HeaderScanner:
    """Feed dataset fragments until the header attributes are known.

    Parameters
    ----------
    transfer_syntax : str
        Transfer syntax UID the dataset is encoded in (from the presentation context).

    Notes
    -----
    Fragments are kept (as ``bytes``) until :meth:`feed` returns the fields, so the caller can
    write them out afterwards. For the deflated transfer syntax the fragments are inflated on the
    fly for scanning only; what is kept is what was received.
    """

    def __init__(self, transfer_syntax: str) -> None:
        self._implicit = transfer_syntax == _IMPLICIT
        self._little = transfer_syntax != _BIG_ENDIAN
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if transfer_syntax == _DEFLATED else None
        self._plain = bytearray()
        self.received: list[bytes] = []
        self.received_bytes = 0

    def feed(self, fragment: bytes | memoryview, *, last: bool) -> HeaderFields | None:
        """Add a fragment; return the fields once they are known, else ``None``.

        Parameters
        ----------
        fragment : bytes-like
            The next piece of the encoded dataset; it is copied.
        last : bool
            Whether this is the final fragment of the dataset.

        Raises
        ------
        ValueError
            The dataset cannot be parsed, or its header exceeds ``MAX_HEADER_BYTES``.
        """
        chunk = bytes(fragment)
        self.received.append(chunk)
        self.received_bytes += len(chunk)
        if self._inflater is not None:
            try:  # inflate no more than the header may take, whatever the ratio
                room = MAX_HEADER_BYTES + 1 - len(self._plain)
                self._plain += self._inflater.decompress(self._inflater.unconsumed_tail + chunk, room)
                if last and len(self._plain) <= MAX_HEADER_BYTES:
                    self._plain += self._inflater.flush(MAX_HEADER_BYTES + 1 - len(self._plain))
            except zlib.error as exc:
                raise ValueError(f"deflated dataset cannot be inflated: {exc}") from exc
            if len(self._plain) > MAX_HEADER_BYTES:
                raise ValueError(f"no SeriesInstanceUID within the first {MAX_HEADER_BYTES} inflated bytes")
            view: bytes | bytearray = self._plain
        elif len(self.received) == 1:
            view = chunk
        else:
            view = b"".join(self.received)
        try:
            return scan_header(view, implicit=self._implicit, little=self._little, complete=last)
        except NeedMoreData:
            if self.received_bytes > MAX_HEADER_BYTES:
                raise ValueError(f"no SeriesInstanceUID within the first {MAX_HEADER_BYTES} bytes") from None
            return None


# -- the whole data set, to its end -------------------------------------------------------------------------------

MAX_NESTING = 32              # sequences within sequences
MAX_INFLATE_RATIO = 200       # inflated bytes per deflated byte (after the first MAX_INFLATE_SLACK_BYTES)
MAX_INFLATE_SLACK_BYTES = 16 << 20
MAX_INFLATED_BYTES = 4 << 30  # a deflated data set that inflates past this is refused
_PIXEL_DATA = 0x7FE00010


class MalformedDataset(ValueError):
    """The data set does not parse to its end (a wrong length, a bad VR, a bomb): answer 0xC210, store nothing."""


class _FileSource:
    """Element reads from a file: values are skipped by seeking, never read."""

    def __init__(self, f, offset: int, size: int) -> None:  # noqa: ANN001
        self._f = f
        self._f.seek(offset)
        self.pos = 0
        self._size = size - offset

    def at_end(self) -> bool:
        return self.pos >= self._size

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise MalformedDataset(f"the data set ends inside an element header at byte {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if self.pos + n > self._size:
            raise MalformedDataset(f"a value of {n} bytes at byte {self.pos} runs past the end of the data set")
        self._f.seek(n, 1)
        self.pos += n


class _InflateSource:
    """Element reads from a deflated data set, inflated as it is walked (bounded memory, size and ratio)."""

    def __init__(self, f, offset: int, size: int) -> None:  # noqa: ANN001
        self._f = f
        self._f.seek(offset)
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buf = b""
        self._in = 0
        self.pos = 0
        self._out = 0

    def _more(self) -> bool:
        if self._z.unconsumed_tail:
            data = self._z.unconsumed_tail
        else:
            data = self._f.read(1 << 16)
            self._in += len(data)
        try:
            got = self._z.decompress(data, 1 << 20) if data else self._z.flush()
        except zlib.error as exc:
            raise MalformedDataset(f"deflated data set cannot be inflated: {exc}") from exc
        self._out += len(got)
        if self._out > min(MAX_INFLATED_BYTES, MAX_INFLATE_SLACK_BYTES + MAX_INFLATE_RATIO * self._in):
            raise MalformedDataset(f"deflated data set inflates past {self._out} bytes from {self._in}: refused "
                                   f"(more than {MAX_INFLATE_RATIO}:1)")
        self._buf += got
        return bool(got) or bool(data)

    def at_end(self) -> bool:
        while not self._buf:
            if not self._more():
                return True
        return False

    def read(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._more():
                raise MalformedDataset(f"the data set ends inside an element header at byte {self.pos}")
        data, self._buf = self._buf[:n], self._buf[n:]
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        left = n
        while left:
            if not self._buf and not self._more():
                raise MalformedDataset(f"a value of {n} bytes at byte {self.pos} runs past the end of the data set")
            k = min(left, len(self._buf))
            self._buf = self._buf[k:]
            left -= k
            self.pos += k


def _header_of(src, implicit: bool, little: bool) -> tuple[int, bytes, int]:  # noqa: ANN001
    raw = src.read(8)
    group, elem = struct.unpack("<HH" if little else ">HH", raw[:4])
    tag = group << 16 | elem
    if group == 0xFFFE:
        return tag, b"", struct.unpack("<L" if little else ">L", raw[4:])[0]
    if implicit:
        return tag, b"", struct.unpack("<L", raw[4:])[0]
    vr = raw[4:6]
    if not _is_vr(vr):
        raise MalformedDataset(f"no VR at byte {src.pos - 4} ({vr!r}): a length before it is wrong")
    if vr in _LONG_VRS:
        return tag, vr, struct.unpack("<L" if little else ">L", src.read(4))[0]
    return tag, vr, struct.unpack("<H" if little else ">H", raw[6:])[0]


def _walk(src, implicit: bool, little: bool, *, depth: int, end: int | None, in_item: bool) -> None:  # noqa: ANN001
    """Walk elements until ``end`` (defined-length item), an item delimiter (``in_item``) or the end of data."""
    if depth > MAX_NESTING:
        raise MalformedDataset(f"sequences nested deeper than {MAX_NESTING}")
    previous = -1
    while True:
        if end is not None:
            if src.pos == end:
                return
            if src.pos > end:
                raise MalformedDataset(f"an element runs past the end of its item at byte {end}")
        elif not in_item and src.at_end():
            return
        at = src.pos
        tag, vr, length = _header_of(src, implicit, little)
        if tag == _ITEM_END and in_item:
            return
        if tag >> 16 == 0xFFFE:
            raise MalformedDataset(f"item tag ({tag >> 16:04X},{tag & 0xFFFF:04X}) outside a sequence at byte {at}")
        if tag <= previous:
            raise MalformedDataset(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {at} is out of order: a "
                                   "length before it is wrong")
        previous = tag
        if length != _UNDEFINED:
            src.skip(length)
        elif tag == _PIXEL_DATA and vr in (b"OB", b"OW", b""):
            _walk_fragments(src, little)
        else:  # a sequence (or UN, whose content is implicit VR little endian)
            nested = vr == b"UN"
            _walk_sequence(src, implicit or nested, little or nested, depth=depth + 1)


def _walk_sequence(src, implicit: bool, little: bool, *, depth: int) -> None:  # noqa: ANN001
    while True:
        at = src.pos
        tag, _, length = _header_of(src, True, little)  # item tags have no VR
        if tag == _SEQ_END:
            return
        if tag != _ITEM:
            raise MalformedDataset(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {at} where a sequence item belongs")
        if length == _UNDEFINED:
            _walk(src, implicit, little, depth=depth, end=None, in_item=True)
        else:
            src.skip(length)


def _walk_fragments(src, little: bool) -> None:  # noqa: ANN001
    while True:
        at = src.pos
        tag, _, length = _header_of(src, True, little)
        if tag == _SEQ_END:
            return
        if tag != _ITEM or length == _UNDEFINED:
            raise MalformedDataset(f"encapsulated pixel data broken at byte {at}")
        src.skip(length)


def check_dataset_file(path, offset: int, transfer_syntax: str) -> None:  # noqa: ANN001
    """Walk the data set of a stored file from ``offset`` to its end; raise :class:`MalformedDataset` if it breaks.

    Values of defined length are skipped (seeked over), so the cost is the number of elements, not the bytes;
    undefined-length sequences are walked to a nesting depth of :data:`MAX_NESTING`; a deflated data set is
    inflated as it is walked, in bounded memory, and refused past :data:`MAX_INFLATE_RATIO` : 1.
    """
    import os

    implicit = transfer_syntax == _IMPLICIT
    little = transfer_syntax != _BIG_ENDIAN
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        src = (_InflateSource if transfer_syntax == _DEFLATED else _FileSource)(f, offset, size)
        try:
            _walk(src, implicit, little, depth=0, end=None, in_item=False)
        except struct.error as exc:  # pragma: no cover - reads are exact
            raise MalformedDataset(str(exc)) from exc
