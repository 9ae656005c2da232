"""Durable, path-safe storage of received instances, kept exactly as received.

Layout::

    <root>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm      committed instances
    <root>/<SeriesInstanceUID>/.<random>.part             in flight (removed by :meth:`Spool.scan`)

A file is the 128-byte preamble, ``DICM``, a file meta group written here and then the dataset bytes
exactly as they came off the network (no decode, no re-encode), in the transfer syntax of the
presentation context they arrived on.

The commit protocol is: write the temp file in the series folder, ``fsync`` it, ``link`` it to its
final name (never replacing an existing file: a resent SOP Instance UID is stored once and reported
as a duplicate), remove the temp name, ``fsync`` the folder. Once :meth:`Spool.store` returns, the
instance survives a crash or power cut; that is the moment the C-STORE may be acknowledged. The index
(``store/db.py``) is written afterwards and rebuilt from :meth:`Spool.scan` on start.

Every UID is checked against the UID grammar (:func:`dicomnode.uids.check_uid`) before it is used in
a path; nothing unchecked ever becomes part of one.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dicomnode.errors import SpoolError, SpoolFullError
from dicomnode.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, check_uid

__all__ = ["Spool", "StoredInstance", "encode_file_meta"]

log = logging.getLogger(__name__)

_SUFFIX = ".dcm"
_TEMP_SUFFIX = ".part"
_PREAMBLE = b"\x00" * 128 + b"DICM"

Chunks = bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview]


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One instance committed to the spool.

    Attributes
    ----------
    path : Path
        The committed file (``<root>/<series>/<sop>.dcm``).
    sop_instance_uid, sop_class_uid, study_uid, series_uid : str
        UIDs, grammar-checked and without padding.
    modality : str
        Modality (0008,0060), may be empty.
    transfer_syntax : str
        Transfer syntax UID the dataset bytes are encoded in.
    size_bytes : int
        Size of the file on disk, meta included.
    calling_ae : str
        AE title of the sender ("" when not received over the network).
    peer_host : str
        Address of the sender ("" when not received over the network).
    received_at : float
        ``time.time()`` at commit.
    duplicate : bool
        The SOP Instance UID was already in the spool; the existing file was kept.
    """

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    modality: str
    transfer_syntax: str
    size_bytes: int
    calling_ae: str
    peer_host: str
    received_at: float
    duplicate: bool


def _meta_element(group_elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    tag = struct.pack("<HH", group_elem >> 16, group_elem & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\x00\x00" + struct.pack("<L", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def encode_file_meta(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_ae: str = ""
) -> bytes:
    """Encode the preamble, ``DICM`` prefix and File Meta Information group (PS3.10 section 7.1).

    Parameters
    ----------
    sop_class_uid, sop_instance_uid : str
        Media Storage SOP Class and Instance UIDs (already checked).
    transfer_syntax : str
        Transfer Syntax UID of the dataset that follows.
    source_ae : str, optional
        Source Application Entity Title (0002,0016), e.g. the calling AE; omitted when empty.

    Returns
    -------
    bytes
        132 bytes of preamble and prefix followed by the explicit VR little endian group 0002.
    """
    body = b"".join(
        (
            _meta_element(0x00020001, b"OB", b"\x00\x01"),
            _meta_element(0x00020002, b"UI", sop_class_uid.encode("ascii")),
            _meta_element(0x00020003, b"UI", sop_instance_uid.encode("ascii")),
            _meta_element(0x00020010, b"UI", transfer_syntax.encode("ascii")),
            _meta_element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _meta_element(0x00020013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii")),
            _meta_element(0x00020016, b"AE", source_ae.strip().encode("ascii", "replace")[:16]) if source_ae.strip() else b"",
        )
    )
    group_length = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HL", 4, len(body))
    return _PREAMBLE + group_length + body


class _SourceError(Exception):
    """Carries an exception raised by the caller's chunk iterable past the disk-error handling."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    total = len(view)
    written = os.write(fd, view)
    while written < total:
        written += os.write(fd, view[written:])
    return total


def _as_chunks(dataset_bytes: Chunks) -> Iterable[bytes | bytearray | memoryview]:
    if isinstance(dataset_bytes, (bytes, bytearray, memoryview)):
        return (dataset_bytes,)
    return dataset_bytes


def _drain(chunks: Iterable[bytes | bytearray | memoryview]) -> None:
    for _ in chunks:
        pass


class Spool:
    """Durable storage of received instances under one root folder.

    Parameters
    ----------
    root : Path
        Folder of the spool, e.g. ``<data_dir>/instances``; created if missing.

    Notes
    -----
    Thread-safe: associations store side by side; two stores of the same SOP Instance UID at the
    same moment leave one file, and the later one is reported as a duplicate.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------------

    def path_for(self, series_uid: str, sop_instance_uid: str) -> Path:
        """Return where an instance is (or would be) stored.

        Parameters
        ----------
        series_uid, sop_instance_uid : str
            UIDs as received; checked against the UID grammar.

        Raises
        ------
        InvalidUIDError
            If either UID breaks the grammar.
        """
        series = check_uid(series_uid, "SeriesInstanceUID")
        sop = check_uid(sop_instance_uid, "SOPInstanceUID")
        return self.root / series / (sop + _SUFFIX)

    def _series_dir(self, series: str) -> Path:
        folder = self.root / series
        if series in self._known_dirs:
            return folder
        with self._dirs_lock:
            if series not in self._known_dirs:
                try:
                    folder.mkdir(exist_ok=False)
                    _fsync_dir(self.root)  # the new folder's entry must survive a crash, too
                except FileExistsError:
                    pass
                self._known_dirs.add(series)
        return folder

    def _open_temp(self, temp: Path, series: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            return os.open(temp, flags, 0o644)
        except FileNotFoundError:
            # the series folder was removed by retention since we last saw it: make it again
            with self._dirs_lock:
                self._known_dirs.discard(series)
            self._series_dir(series)
            return os.open(temp, flags, 0o644)

    # -- store ---------------------------------------------------------------------------------

    def store(
        self,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax: str,
        study_uid: str,
        series_uid: str,
        modality: str,
        dataset_bytes: Chunks,
        calling_ae: str = "",
        peer_host: str = "",
        verify: "Callable[[Path, int], None] | None" = None,
    ) -> StoredInstance:
        """Store one instance durably; return once it is committed.

        Parameters
        ----------
        sop_class_uid, sop_instance_uid, transfer_syntax, study_uid, series_uid : str
            UIDs as received; all are checked against the UID grammar before anything is written.
        modality : str
            Modality (0008,0060), may be empty.
        dataset_bytes : bytes-like or iterable of bytes-like
            The encoded dataset (no file meta), whole or as chunks; chunks are written as they come
            and may be views of a reused buffer. The iterable is always consumed to its end (also
            for a duplicate or on a write error), so a network stream behind it stays in step;
            it is not consumed when a UID is invalid.
        calling_ae, peer_host : str, optional
            Where the instance came from; kept in the result (and the AE in the file meta).
        verify : callable, optional
            Called with the written temp file and the offset of its data set before the commit; whatever it
            raises (e.g. a data set that does not parse to its end) removes the temp file and is re-raised, so
            nothing that fails it is ever stored.

        Returns
        -------
        StoredInstance
            ``duplicate=True`` when the SOP Instance UID was already stored (the first copy is kept).

        Raises
        ------
        InvalidUIDError
            A UID breaks the grammar; nothing was written.
        SpoolFullError
            Writing failed (disk full, I/O error, ...); the temp file is removed, nothing remains.
        """
        sop_class = check_uid(sop_class_uid, "SOPClassUID")
        sop = check_uid(sop_instance_uid, "SOPInstanceUID")
        tsyntax = check_uid(transfer_syntax, "TransferSyntaxUID")
        study = check_uid(study_uid, "StudyInstanceUID")
        series = check_uid(series_uid, "SeriesInstanceUID")
        chunks = _as_chunks(dataset_bytes)

        try:
            folder = self._series_dir(series)
        except OSError as exc:
            _drain(chunks)
            raise SpoolFullError(f"cannot create series folder for {series} in {self.root}: {exc}") from exc
        final = folder / (sop + _SUFFIX)
        if final.exists():
            _drain(chunks)
            return self._result(final, sop, sop_class, study, series, modality, tsyntax, calling_ae, peer_host, True)

        meta = encode_file_meta(
            sop_class_uid=sop_class, sop_instance_uid=sop, transfer_syntax=tsyntax, source_ae=calling_ae
        )
        temp = folder / f".{sop}.{os.getpid()}.{threading.get_ident()}{_TEMP_SUFFIX}"
        fd = -1
        size_bytes = 0
        try:
            fd = self._open_temp(temp, series)
            size_bytes += _write_all(fd, meta)
            it = iter(chunks)
            while True:
                try:
                    chunk = next(it)
                except StopIteration:
                    break
                except OSError as exc:  # the source failed (e.g. a network error), not the disk
                    raise _SourceError(exc) from exc
                size_bytes += _write_all(fd, chunk)
            if verify is not None:
                verify(temp, len(meta))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            duplicate = _commit(temp, final)
            _fsync_dir(folder)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            _remove_quietly(temp)
            _drain(chunks)  # keep the sender's stream in step
            what = errno.errorcode.get(exc.errno or 0, "OSError")
            log.error(
                "spool write failed (%s) for sop %s, series %s", what, sop, series,
                extra={"sop_instance_uid": sop, "series_uid": series, "errno": what},
            )
            raise SpoolFullError(f"could not store {sop} in {folder}: {exc}; free space or fix the disk") from exc
        except _SourceError as exc:
            if fd >= 0:
                os.close(fd)
            _remove_quietly(temp)
            raise exc.error from None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            _remove_quietly(temp)
            raise
        return self._result(final, sop, sop_class, study, series, modality, tsyntax, calling_ae, peer_host,
                            duplicate, size_bytes=None if duplicate else size_bytes)

    def _result(
        self,
        path: Path,
        sop: str,
        sop_class: str,
        study: str,
        series: str,
        modality: str,
        tsyntax: str,
        calling_ae: str,
        peer_host: str,
        duplicate: bool,
        *,
        size_bytes: int | None = None,
    ) -> StoredInstance:
        if size_bytes is None:
            try:
                size_bytes = path.stat().st_size
            except OSError:
                size_bytes = 0
        return StoredInstance(
            path=path,
            sop_instance_uid=sop,
            sop_class_uid=sop_class,
            study_uid=study,
            series_uid=series,
            modality=modality.strip(),
            transfer_syntax=tsyntax,
            size_bytes=size_bytes,
            calling_ae=calling_ae.strip(),
            peer_host=peer_host,
            received_at=time.time(),
            duplicate=duplicate,
        )

    # -- scan and remove -----------------------------------------------------------------------

    def scan(self, skip: "Container[str]" = ()) -> Iterator[StoredInstance]:
        """Yield every committed instance whose path is not in ``skip``; remove temp files left by a crash.

        ``skip`` (e.g. the paths already indexed) is checked before a file is opened, so a rescan after a crash
        reads only the files the index lacks, not a million it has.

        Reads file meta and header only (``stop_before_pixels``). Files that cannot be read, or
        whose UIDs break the grammar or do not match their path, are skipped with a warning (they
        are never deleted: an operator decides).

        Yields
        ------
        StoredInstance
            With ``duplicate=False``, ``calling_ae`` from the file meta's Source AE Title,
            ``peer_host=""`` and ``received_at`` = the file's modification time.
        """
        from pydicom import dcmread  # only here: the hot path never decodes

        tags = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"]
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(folder.iterdir()):
                name = path.name
                if name.endswith(_TEMP_SUFFIX):
                    log.info("removing unfinished temp file %s", path, extra={"path": str(path)})
                    _remove_quietly(path)
                    continue
                if not name.endswith(_SUFFIX) or name.startswith(".") or str(path) in skip:
                    continue
                try:
                    ds = dcmread(path, stop_before_pixels=True, specific_tags=tags)
                    meta = ds.file_meta
                    sop = check_uid(str(ds.get("SOPInstanceUID", meta.get("MediaStorageSOPInstanceUID", ""))),
                                    "SOPInstanceUID")
                    series = check_uid(str(ds.get("SeriesInstanceUID", "")), "SeriesInstanceUID")
                    study = check_uid(str(ds.get("StudyInstanceUID", "")), "StudyInstanceUID")
                    sop_class = check_uid(str(ds.get("SOPClassUID", meta.get("MediaStorageSOPClassUID", ""))),
                                          "SOPClassUID")
                    tsyntax = check_uid(str(meta.get("TransferSyntaxUID", "")), "TransferSyntaxUID")
                    if folder.name != series or name != sop + _SUFFIX:
                        raise SpoolError(f"{path} does not match its SOP ({sop}) / series ({series}) UIDs")
                    st = path.stat()
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rebuild
                    log.warning("skipping unreadable spool file %s: %s", path, exc, extra={"path": str(path)})
                    continue
                yield StoredInstance(
                    path=path,
                    sop_instance_uid=sop,
                    sop_class_uid=sop_class,
                    study_uid=study,
                    series_uid=series,
                    modality=str(ds.get("Modality", "") or ""),
                    transfer_syntax=tsyntax,
                    size_bytes=st.st_size,
                    calling_ae=str(meta.get("SourceApplicationEntityTitle", "") or "").strip(),
                    peer_host="",
                    received_at=st.st_mtime,
                    duplicate=False,
                )
            with self._dirs_lock:
                self._known_dirs.add(folder.name)

    def remove(self, path: Path) -> None:
        """Remove a committed instance (retention); remove its series folder when it becomes empty.

        Parameters
        ----------
        path : Path
            A path returned by :meth:`store` or :meth:`scan`.

        Raises
        ------
        SpoolError
            If `path` is not a file of this spool.
        """
        path = Path(path)
        resolved_root = self.root.resolve()
        parent = path.parent
        if parent.parent.resolve() != resolved_root or not path.name.endswith(_SUFFIX):
            raise SpoolError(f"{path} is not an instance of the spool at {self.root}; refusing to remove it")
        try:
            path.unlink()
        except FileNotFoundError:
            return
        with self._dirs_lock:
            try:
                parent.rmdir()  # only succeeds when empty
            except OSError:
                pass
            else:
                self._known_dirs.discard(parent.name)
                _fsync_dir(self.root)
                return
        _fsync_dir(parent)


def _commit(temp: Path, final: Path) -> bool:
    """Give `temp` the name `final` unless `final` exists (then drop `temp`); return whether it existed."""
    try:
        os.link(temp, final)
    except FileExistsError:
        os.unlink(temp)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # file systems without hard links: check, then rename (a racing twin may be replaced by an identical copy)
        if final.exists():
            os.unlink(temp)
            return True
        os.rename(temp, final)
        return False
    os.unlink(temp)
    return False


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
