"""store/spool.py: durable, path-safe, as-received storage; a real full disk (tmpfs) for the error path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomnode.errors import InvalidUIDError, SpoolError, SpoolFullError
from dicomnode.store.spool import Spool, StoredInstance, encode_file_meta

HOSTILE = "1.2.3/../../x"


def make_dataset(rows: int = 16, *, series_uid: str | None = None, sop_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.Modality = "CT"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Rows = rows
    ds.Columns = rows
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.arange(rows * rows, dtype=np.int16).tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    """The data set alone (no file meta), explicit VR little endian, as a C-STORE carries it."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def store(spool: Spool, ds: Dataset, data: object | None = None, **overrides: str) -> StoredInstance:
    kwargs = dict(
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax=ExplicitVRLittleEndian,
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        modality="CT",
        dataset_bytes=encode(ds) if data is None else data,
        calling_ae="MODALITY",
        peer_host="127.0.0.1",
    )
    kwargs.update(overrides)
    return spool.store(**kwargs)  # type: ignore[arg-type]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture()
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "data" / "instances")


def test_store_writes_meta_plus_the_bytes_as_received(spool: Spool) -> None:
    ds = make_dataset()
    raw = encode(ds)
    stored = store(spool, ds)

    assert stored.path == spool.root / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert not stored.duplicate
    assert (stored.calling_ae, stored.peer_host, stored.modality) == ("MODALITY", "127.0.0.1", "CT")
    content = stored.path.read_bytes()
    assert stored.size_bytes == len(content)
    assert content.endswith(raw)  # the dataset part is byte-identical
    assert content[128:132] == b"DICM"
    back = pydicom.dcmread(stored.path)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert np.array_equal(back.pixel_array, np.arange(256, dtype=np.int16).reshape(16, 16))
    assert [p.name for p in all_files(spool.root)] == [stored.path.name]  # no temp file left


def test_chunks_and_memoryviews_are_written_in_order(spool: Spool) -> None:
    ds = make_dataset(64)
    raw = encode(ds)
    buffer = bytearray(1000)  # a reused buffer, as the network path hands it over

    def chunks() -> Iterator[memoryview]:
        for i in range(0, len(raw), 1000):
            piece = raw[i : i + 1000]
            buffer[: len(piece)] = piece
            yield memoryview(buffer)[: len(piece)]

    stored = store(spool, ds, chunks())
    assert stored.path.read_bytes().endswith(raw)
    assert stored.size_bytes == stored.path.stat().st_size


def test_resent_instance_is_stored_once_and_reported_duplicate(spool: Spool) -> None:
    ds = make_dataset()
    first = store(spool, ds)
    before = first.path.read_bytes()
    consumed = []

    def chunks() -> Iterator[bytes]:
        for piece in (b"\x08\x00", b"garbage"):
            consumed.append(piece)
            yield piece

    again = store(spool, ds, chunks())
    assert again.duplicate and again.path == first.path
    assert consumed == [b"\x08\x00", b"garbage"]  # the stream was drained, so a network peer stays in step
    assert first.path.read_bytes() == before
    assert len(all_files(spool.root)) == 1


@pytest.mark.parametrize("field", ["sop_instance_uid", "series_uid", "study_uid", "sop_class_uid", "transfer_syntax"])
@pytest.mark.parametrize("bad", [HOSTILE, "", "..", "1." + "2" * 63])
def test_invalid_uids_write_nothing_anywhere(tmp_path: Path, spool: Spool, field: str, bad: str) -> None:
    ds = make_dataset()
    with pytest.raises(InvalidUIDError):
        store(spool, ds, **{field: bad})
    assert all_files(tmp_path) == []
    assert list(spool.root.iterdir()) == []
    with pytest.raises(InvalidUIDError):
        spool.path_for(bad if field == "series_uid" else str(ds.SeriesInstanceUID),
                       bad if field != "series_uid" else str(ds.SOPInstanceUID))


def test_padded_uids_are_stripped_before_use(spool: Spool) -> None:
    ds = make_dataset()
    stored = store(spool, ds, series_uid=ds.SeriesInstanceUID + "\x00", sop_instance_uid=ds.SOPInstanceUID + " ")
    assert stored.path.name == f"{ds.SOPInstanceUID}.dcm"
    assert stored.path.parent.name == ds.SeriesInstanceUID


def test_a_failing_source_leaves_nothing_and_keeps_its_error(spool: Spool) -> None:
    ds = make_dataset()

    def broken() -> Iterator[bytes]:
        yield b"\x08\x00\x16\x00"
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):  # not SpoolFullError: the disk is fine
        store(spool, ds, broken())
    assert all_files(spool.root) == []


@pytest.fixture()
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs), so writes fail with ENOSPC like a full disk."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"cannot mount a tmpfs (root needed): {proc.stderr}"
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_raises_spool_full_and_leaves_no_partial_file(tiny_disk: Path) -> None:
    spool = Spool(tiny_disk / "instances")
    big = make_dataset(800)  # 1.28 MB of pixels > 1 MiB
    with pytest.raises(SpoolFullError, match="free space"):
        store(spool, big)
    assert all_files(tiny_disk) == []  # neither the final name nor the temp file
    small = store(spool, make_dataset(16))  # space is back: the spool still works
    assert small.path.exists() and all_files(tiny_disk) == [small.path]


def test_scan_finds_committed_files_and_removes_temp_files(spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    stored = [store(spool, make_dataset()) for _ in range(3)]
    series_dir = stored[0].path.parent
    leftover = series_dir / ".1.2.3.999.part"
    leftover.write_bytes(b"half")
    junk = series_dir / "9.9.9.dcm"
    junk.write_bytes(b"not dicom")

    found = sorted(spool.scan(), key=lambda s: s.sop_instance_uid)
    assert [s.path for s in found] == sorted((s.path for s in stored), key=lambda p: p.stem)
    assert all(s.transfer_syntax == ExplicitVRLittleEndian and s.calling_ae == "MODALITY" for s in found)
    assert {s.series_uid for s in found} == {s.series_uid for s in stored}
    assert not leftover.exists()
    assert junk.exists()  # unreadable files are reported, never deleted
    assert "skipping unreadable spool file" in caplog.text


def test_remove_deletes_the_file_and_its_empty_folder(spool: Spool, tmp_path: Path) -> None:
    a = store(spool, make_dataset(series_uid="1.2.3.4"))
    b = store(spool, make_dataset(series_uid="1.2.3.4"))
    spool.remove(a.path)
    assert not a.path.exists() and b.path.exists()
    spool.remove(b.path)
    assert not b.path.parent.exists()
    again = store(spool, make_dataset(series_uid="1.2.3.4"))  # the folder comes back when needed
    assert again.path.exists()
    outside = tmp_path / "elsewhere.dcm"
    outside.write_bytes(b"x")
    with pytest.raises(SpoolError):
        spool.remove(outside)
    assert outside.exists()


def test_file_meta_is_valid_part10(tmp_path: Path) -> None:
    meta = encode_file_meta(sop_class_uid=CTImageStorage, sop_instance_uid="1.2.3", transfer_syntax="1.2.840.10008.1.2",
                            source_ae="ODD")
    path = tmp_path / "meta.dcm"
    path.write_bytes(meta)
    fm = pydicom.filereader.read_file_meta_info(path)
    assert fm.MediaStorageSOPInstanceUID == "1.2.3"
    assert fm.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert fm.FileMetaInformationGroupLength == len(meta) - 132 - 12
    assert fm.SourceApplicationEntityTitle == "ODD"


def test_concurrent_stores_of_one_instance_leave_one_file(spool: Spool) -> None:
    import threading

    ds = make_dataset(128)
    raw = encode(ds)
    results: list[StoredInstance] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        results.append(store(spool, ds, raw))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert sum(not r.duplicate for r in results) == 1
    assert len(all_files(spool.root)) == 1
    assert results[0].path.read_bytes().endswith(raw)
    assert os.listdir(results[0].path.parent) == [results[0].path.name]


def test_scan_skips_known_paths_without_opening_them(spool: Spool) -> None:
    stored = [store(spool, make_dataset()) for _ in range(3)]
    known = {str(stored[0].path), str(stored[1].path)}
    stored[0].path.write_bytes(b"unreadable: it must not even be opened")
    found = list(spool.scan(skip=known))
    assert [s.path for s in found] == [stored[2].path]


def test_a_data_set_that_fails_verify_is_never_stored(spool: Spool) -> None:
    from dicomnode.net._header import MalformedDataset, check_dataset_file

    ds = make_dataset()
    good = store(spool, ds)
    check_dataset_file(good.path, good.path.read_bytes().index(b"DICM") + 4 + _meta_length(good.path),
                       ExplicitVRLittleEndian)
    with pytest.raises(MalformedDataset):
        spool.store(sop_class_uid=good.sop_class_uid, sop_instance_uid="1.2.3.4.5.6.7",
                    transfer_syntax=ExplicitVRLittleEndian, study_uid=good.study_uid, series_uid=good.series_uid, modality="CT",
                    dataset_bytes=b"\x08\x00\x16\x00UI\xff\x00" + b"1" * 40,
                    verify=lambda p, off: check_dataset_file(p, off, ExplicitVRLittleEndian))
    assert not list(good.path.parent.glob("1.2.3.4.5.6.7*")) and not list(good.path.parent.glob(".*.part"))


def _meta_length(path) -> int:
    import struct
    data = path.read_bytes()
    return 12 + struct.unpack_from("<L", data, 132 + 8)[0]
