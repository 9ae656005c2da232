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

__all__ = ["HeaderFields", "HeaderScanner", "NeedMoreData", "scan_header"]

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
    try:
        while True:
            if pos + 4 > end:
                if pos == end and complete:
                    break
                raise NeedMoreData
            group, elem = struct.unpack_from(tag_fmt, buf, pos)
            if (group << 16 | elem) > _LAST_WANTED:
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
            try:
                self._plain += self._inflater.decompress(chunk)
                if last:
                    self._plain += self._inflater.flush()
            except zlib.error as exc:
                raise ValueError(f"deflated dataset cannot be inflated: {exc}") from exc
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
