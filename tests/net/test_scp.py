"""net/scp.py: the receiving edge, tested over loopback against real DCMTK and pynetdicom peers."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from helpers import STS_CT, dcmtk, dcmtk_env, free_port, wait_for_port
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLossless,
    JPEGLSNearLossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomnode.net._header import HeaderScanner
from dicomnode.net.scp import PeerRule, StorageSCP, StoreStatus
from dicomnode.store.spool import Spool, StoredInstance

PYDICOM_DATA = Path(pydicom.data.__file__).parent / "test_files"
HOSTILE = "1.2.3/../../x"

# pydicom's bundled files (never downloaded) and the storescu option proposing their transfer syntax
COMPRESSED = [
    ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),  # JPEG baseline
    ("JPGExtended.dcm", "-xx"),  # JPEG extended 12 bit
    ("SC_rgb_jpeg_gdcm.dcm", "-xs"),  # JPEG lossless SV1
    ("MR_small_jpeg_ls_lossless.dcm", "-xt"),  # JPEG-LS lossless
    ("MR_small_jp2klossless.dcm", "-xv"),  # JPEG 2000 lossless
    ("JPEG2000.dcm", "-xw"),  # JPEG 2000
    ("MR_small_RLE.dcm", "-xr"),  # RLE
    ("image_dfl.dcm", "-xd"),  # deflated explicit VR little endian
    ("MR_small_bigendian.dcm", "-xb"),  # explicit VR big endian
]


# -- helpers ------------------------------------------------------------------------------------------------------


class Node:
    """A StorageSCP running in this process on a free port, with its spool and the sink's list."""

    def __init__(self, tmp_path: Path, **kwargs: object) -> None:
        self.data_dir = tmp_path / "data"
        self.spool = Spool(self.data_dir / "instances")
        self.received: list[StoredInstance] = []
        self.sink: Callable[[StoredInstance], None] = kwargs.pop("sink", self.received.append)  # type: ignore[assignment]
        kwargs.setdefault("ae_title", "DICOMNODE")
        self.scp = StorageSCP(bind="127.0.0.1", port=0, spool=self.spool, sink=self.sink, **kwargs)  # type: ignore[arg-type]
        self.scp.start()
        self.port = self.scp.port
        self.ae_title = kwargs["ae_title"]

    def files(self) -> list[Path]:
        return sorted(p for p in self.data_dir.rglob("*") if p.is_file())


@pytest.fixture()
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(**kwargs: object) -> Node:
        node = Node(tmp_path / f"node{len(nodes)}", **kwargs)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.scp.stop(timeout_s=10)


def storescu(node_port: int, *paths: Path, aet: str = "MODALITY", aec: str = "DICOMNODE",
             options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    args = [dcmtk("storescu"), "-aet", aet, "-aec", aec, *options]
    if any(p.is_dir() for p in paths):
        args.append("+sd")
    return subprocess.run([*args, "127.0.0.1", str(node_port), *map(str, paths)], capture_output=True, text=True,
                          env=dcmtk_env(), timeout=120)


def echoscu(node_port: int, aet: str = "MODALITY", aec: str = "DICOMNODE") -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("echoscu"), "-aet", aet, "-aec", aec, "127.0.0.1", str(node_port)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=60)


def dataset_part(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, the encoded data set after the file meta) of a Part 10 file."""
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        return str(meta.TransferSyntaxUID), fp.read()


def small_ct(series_uid: str, number: int, rows: int = 32) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientName = "Test^Receiving"
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = (np.arange(rows * rows, dtype=np.int16) + number).tobytes()
    return ds


def write_series(folder: Path, count: int, rows: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.dcm"
        small_ct(series_uid, i + 1, rows).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def scu_store(port: int, datasets: list[Dataset], *, ae_title: str = "DICOMNODE") -> list[int]:
    """Send with pynetdicom's SCU on one association; return the statuses."""
    ae = AE("PYSCU")
    for ts in {str(ds.file_meta.TransferSyntaxUID) for ds in datasets}:
        for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
            ae.add_requested_context(sop_class, ts)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


# -- C-ECHO and the peer policy -----------------------------------------------------------------------------------


def test_echo_succeeds(start_node: Callable[..., Node]) -> None:
    node = start_node()
    proc = echoscu(node.port)
    assert proc.returncode == 0, proc.stderr
    assert node.files() == []


def test_wrong_called_ae_is_rejected_with_its_reason(start_node: Callable[..., Node],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    node = start_node()
    caplog.set_level(logging.WARNING, logger="dicomnode.net.scp")
    proc = echoscu(node.port, aec="SOMEONEELSE")
    assert proc.returncode != 0
    assert "Called AE Title Not Recognized" in proc.stderr + proc.stdout
    assert "association rejected" in caplog.text and "'SOMEONEELSE'" in caplog.text


def test_peer_policy_by_ae_title_and_address(start_node: Callable[..., Node], caplog: pytest.LogCaptureFixture) -> None:
    node = start_node(peers=[PeerRule("CT01", "127.0.0.1"), PeerRule("MR01", "10.1.2.0/24"), PeerRule("ANY")])
    caplog.set_level(logging.WARNING, logger="dicomnode.net.scp")

    unknown = echoscu(node.port, aet="INTRUDER")
    assert unknown.returncode != 0
    assert "Calling AE Title Not Recognized" in unknown.stderr + unknown.stdout
    assert "'INTRUDER' is not a configured peer" in caplog.text

    wrong_host = echoscu(node.port, aet="MR01")
    assert wrong_host.returncode != 0
    assert "'MR01' may only connect from 10.1.2.0/24" in caplog.text

    refused_store = storescu(node.port, STS_CT, aet="INTRUDER")
    assert refused_store.returncode != 0
    assert node.files() == [] and node.received == []

    assert echoscu(node.port, aet="CT01").returncode == 0
    assert echoscu(node.port, aet="ANY").returncode == 0


def test_admit_refuses_new_associations_transiently(start_node: Callable[..., Node],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    reason: list[str | None] = ["free disk below 500 MB"]
    node = start_node(admit=lambda: reason[0])
    caplog.set_level(logging.WARNING, logger="dicomnode.net.scp")
    proc = echoscu(node.port)
    assert proc.returncode != 0
    assert "Rejected Transient" in proc.stderr + proc.stdout
    assert "free disk below 500 MB" in caplog.text
    reason[0] = None
    assert echoscu(node.port).returncode == 0


# -- C-STORE ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_pdu_bytes", [0, 16384])
def test_real_ct_series_stored_once_and_byte_identical(start_node: Callable[..., Node], tmp_path: Path,
                                                       max_pdu_bytes: int) -> None:
    node = start_node(max_pdu_bytes=max_pdu_bytes)
    sources = sorted(STS_CT.glob("*.dcm"))
    proc = storescu(node.port, STS_CT, options=("-xi",))  # implicit VR, as the files are: nothing to convert
    assert proc.returncode == 0, proc.stderr

    # the same send to DCMTK's bit-preserving storescp gives the bytes storescu put on the wire
    reference_dir = tmp_path / "storescp"
    reference_dir.mkdir()
    port = free_port()
    scp = subprocess.Popen([dcmtk("storescp"), "+B", "-od", str(reference_dir), "-aet", "DICOMNODE", str(port)],
                           env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        assert storescu(port, STS_CT, options=("-xi",)).returncode == 0
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    reference = {dataset_part(p)[1] for p in reference_dir.iterdir()}

    files = node.files()
    assert len(files) == len(sources) == len(node.received) == 59
    assert len({s.sop_instance_uid for s in node.received}) == 59
    assert not any(s.duplicate for s in node.received)
    assert {dataset_part(p)[1] for p in files} == reference
    originals = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in sources}
    for stored in node.received:
        assert stored.path == node.spool.root / stored.series_uid / f"{stored.sop_instance_uid}.dcm"
        assert (stored.calling_ae, stored.peer_host, stored.modality) == ("MODALITY", "127.0.0.1", "CT")
        assert stored.size_bytes == stored.path.stat().st_size
        back = pydicom.dcmread(stored.path)
        assert back == originals[stored.sop_instance_uid]  # same elements and values as the source file
        assert back.file_meta.SourceApplicationEntityTitle == "MODALITY"


def test_resent_instance_is_success_and_stored_once(start_node: Callable[..., Node]) -> None:
    node = start_node()
    one = sorted(STS_CT.glob("*.dcm"))[0]
    assert storescu(node.port, one).returncode == 0
    first = node.files()
    mtime = first[0].stat().st_mtime_ns
    second = storescu(node.port, one)
    assert second.returncode == 0 and "Status" not in second.stderr
    assert node.files() == first and first[0].stat().st_mtime_ns == mtime
    assert [s.duplicate for s in node.received] == [False, True]


@pytest.mark.parametrize(("field", "value"), [("SOPInstanceUID", HOSTILE), ("SeriesInstanceUID", HOSTILE),
                                              ("StudyInstanceUID", HOSTILE), ("SeriesInstanceUID", ""),
                                              ("SeriesInstanceUID", "1." + "2" * 63), ("StudyInstanceUID", "..")])
def test_hostile_uids_get_a_failure_status_and_nothing_is_written(start_node: Callable[..., Node], tmp_path: Path,
                                                                  field: str, value: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    node = start_node()
    caplog.set_level(logging.WARNING, logger="dicomnode.net.scp")
    ds = small_ct(generate_uid(), 1)
    setattr(ds, field, value)
    if field == "SOPInstanceUID":
        ds.file_meta.MediaStorageSOPInstanceUID = value
    good = small_ct(generate_uid(), 2)

    statuses = scu_store(node.port, [ds, good])

    assert statuses == [StoreStatus.INVALID_UID, StoreStatus.SUCCESS]  # refused, and the SCP keeps serving
    assert "C-STORE refused (0xC212)" in caplog.text
    everything = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert everything == [node.spool.path_for(good.SeriesInstanceUID, good.SOPInstanceUID)]
    assert not (tmp_path / "x").exists() and not list(tmp_path.rglob("x*"))


def test_eight_concurrent_associations_of_fifty(start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node()
    folders = [tmp_path / "send" / f"a{i}" for i in range(8)]
    sent = {p for folder in folders for p in write_series(folder, 50)}
    procs = [subprocess.Popen([dcmtk("storescu"), "-aet", f"SENDER{i}", "-aec", "DICOMNODE", "+sd", "127.0.0.1",
                               str(node.port), str(folder)], env=dcmtk_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i, folder in enumerate(folders)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, outputs

    files = node.files()
    assert len(files) == len(sent) == 400
    assert len(node.received) == 400 and not any(s.duplicate for s in node.received)
    assert {s.calling_ae for s in node.received} == {f"SENDER{i}" for i in range(8)}
    by_sop = {pydicom.dcmread(p).SOPInstanceUID: p for p in sent}
    for stored in node.received:
        original = pydicom.dcmread(by_sop[stored.sop_instance_uid])
        assert pydicom.dcmread(stored.path).PixelData == original.PixelData


@pytest.mark.parametrize(("name", "option"), COMPRESSED, ids=[c[0] for c in COMPRESSED])
def test_compressed_input_is_stored_in_its_transfer_syntax(start_node: Callable[..., Node], name: str,
                                                           option: str) -> None:
    node = start_node()
    source = PYDICOM_DATA / name
    assert source.exists(), f"pydicom test file {name} is missing"
    original = pydicom.dcmread(source)
    proc = storescu(node.port, source, options=(option,))
    assert proc.returncode == 0, proc.stderr
    [stored] = node.received
    assert stored.transfer_syntax == original.file_meta.TransferSyntaxUID
    back = pydicom.dcmread(stored.path)
    assert back.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert np.array_equal(back.pixel_array, original.pixel_array)


@pytest.mark.parametrize(("tool", "option", "transfer_syntax", "storescu_option"), [
    ("dcmcjpeg", "+el", JPEGLossless, None),  # process 14 (no storescu option proposes it: pynetdicom sends)
    ("dcmcjpls", "+en", JPEGLSNearLossless, "-xu"),  # pydicom bundles no near-lossless file with UIDs
])
def test_dcmtk_compressed_input(start_node: Callable[..., Node], tmp_path: Path, tool: str, option: str,
                                transfer_syntax: str, storescu_option: str | None) -> None:
    node = start_node()
    plain = tmp_path / "plain.dcm"
    source = small_ct(generate_uid(), 1, rows=64)
    source.PixelRepresentation = 0  # near-lossless JPEG-LS needs unsigned pixels (the values are >= 0)
    source.save_as(plain, enforce_file_format=True)
    compressed = tmp_path / "compressed.dcm"
    proc = subprocess.run([dcmtk(tool), option, str(plain), str(compressed)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ds = pydicom.dcmread(compressed)
    assert ds.file_meta.TransferSyntaxUID == transfer_syntax
    if storescu_option is None:
        assert scu_store(node.port, [ds]) == [StoreStatus.SUCCESS]
    else:
        sent = storescu(node.port, compressed, options=(storescu_option,))
        assert sent.returncode == 0, sent.stderr
    [stored] = node.received
    assert stored.transfer_syntax == transfer_syntax
    assert np.array_equal(pydicom.dcmread(stored.path).pixel_array, ds.pixel_array)


def test_full_disk_answers_out_of_resources(start_node: Callable[..., Node], tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)], capture_output=True,
                             text=True)
    assert mounted.returncode == 0, f"cannot mount a tmpfs (root needed): {mounted.stderr}"
    try:
        received: list[StoredInstance] = []
        scp = StorageSCP(ae_title="DICOMNODE", bind="127.0.0.1", port=0, spool=Spool(tiny / "instances"),
                         sink=received.append)
        scp.start()
        try:
            big = small_ct(generate_uid(), 1, rows=800)  # 1.28 MB of pixels on a 1 MiB disk
            small = small_ct(generate_uid(), 2)
            assert scu_store(scp.port, [big, small]) == [StoreStatus.OUT_OF_RESOURCES, StoreStatus.SUCCESS]
        finally:
            scp.stop(timeout_s=10)
        assert [s.sop_instance_uid for s in received] == [small.SOPInstanceUID]
        leftovers = sorted(p.name for p in tiny.rglob("*") if p.is_file())
        assert leftovers == [f"{small.SOPInstanceUID}.dcm"]  # no partial file of the big one
    finally:
        subprocess.run(["umount", "-l", str(tiny)], check=False)


def test_a_failing_sink_answers_failure_and_the_scp_keeps_serving(start_node: Callable[..., Node],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    calls: list[StoredInstance] = []

    def sink(stored: StoredInstance) -> None:
        calls.append(stored)
        if len(calls) == 1:
            raise RuntimeError("queue closed")

    node = start_node(sink=sink)
    ds = small_ct(generate_uid(), 1)
    assert scu_store(node.port, [ds, ds]) == [StoreStatus.PROCESSING_FAILURE, StoreStatus.SUCCESS]
    assert [c.duplicate for c in calls] == [False, True]  # the resend reaches the sink again
    assert "sink failed" in caplog.text
    assert echoscu(node.port).returncode == 0


def test_garbage_on_the_wire_does_not_hurt_the_scp(start_node: Callable[..., Node]) -> None:
    node = start_node()
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(b"\x09\x00\x00\x00\x00\x04GET / HTTP/1.1\r\n\r\n")
        sock.settimeout(5)
        try:
            while sock.recv(4096):
                pass
        except (ConnectionResetError, TimeoutError):
            pass
    # an association that sends a broken P-DATA PDU is aborted, the next one works
    ae = AE("PYSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
    assert assoc.is_established
    assoc.dul.socket.send(b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x40\x01\x03")  # PDV longer than its PDU
    deadline = time.monotonic() + 10
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert assoc.is_aborted
    assert echoscu(node.port).returncode == 0
    assert node.files() == []


def test_stop_finishes_the_store_in_flight_and_refuses_new_work(start_node: Callable[..., Node],
                                                                 tmp_path: Path) -> None:
    node = start_node()
    folder = tmp_path / "many"
    write_series(folder, 400, rows=64)
    sender = subprocess.Popen([dcmtk("storescu"), "-aet", "MODALITY", "-aec", "DICOMNODE", "+sd", "127.0.0.1",
                               str(node.port), str(folder)], env=dcmtk_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(node.received) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        started = time.monotonic()
        node.scp.stop(timeout_s=10)
        assert time.monotonic() - started < 5
        assert sender.wait(timeout=30) != 0  # aborted before it could send everything
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    files = node.files()
    assert 20 <= len(files) < 400
    assert sorted(s.path for s in node.received) == files  # every acknowledged instance is there, nothing else
    for path in files:
        assert pydicom.dcmread(path).PixelData  # complete files only, no temp files
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", node.port), timeout=2).close()


def test_idle_association_is_aborted_on_stop(start_node: Callable[..., Node]) -> None:
    node = start_node()
    ae = AE("PYSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
    assert assoc.is_established
    silent = socket.create_connection(("127.0.0.1", node.port), timeout=5)  # connected, never asks anything
    started = time.monotonic()
    node.scp.stop(timeout_s=10)
    assert time.monotonic() - started < 3
    try:
        assert silent.recv(100) == b""  # closed by the SCP ...
    except ConnectionResetError:
        pass  # ... or reset
    silent.close()
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert assoc.is_aborted


def test_stock_pynetdicom_path_stores_the_same(start_node: Callable[..., Node]) -> None:
    node = start_node(fast_receive=False)
    proc = storescu(node.port, STS_CT)
    assert proc.returncode == 0, proc.stderr
    assert len(node.files()) == 59 == len(node.received)
    bad = small_ct(HOSTILE, 1)
    assert scu_store(node.port, [bad]) == [StoreStatus.INVALID_UID]
    assert len(node.files()) == 59


def test_fast_path_is_refused_on_another_pynetdicom_and_the_stock_path_serves(
        start_node: Callable[..., Node], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import pynetdicom

    from dicomnode.net._fastdul import PYNETDICOM_VERSION, fast_path_refusal

    assert pynetdicom.__version__ == PYNETDICOM_VERSION  # the pin in pyproject.toml
    assert fast_path_refusal() is None
    assert "pynetdicom 3.0.4" in fast_path_refusal("3.1.0") and "fast_receive = false" in fast_path_refusal("3.1.0")
    assert start_node().scp.receive_path == "fast"

    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")  # as if another release were installed
    with caplog.at_level(logging.WARNING, logger="dicomnode.net.scp"):
        node = start_node()
    assert node.scp.receive_path == "stock"
    refused = [r for r in caplog.records if r.getMessage().startswith("fast receive path refused")]
    assert len(refused) == 1 and "pynetdicom 3.1.0 is installed" in refused[0].getMessage()
    proc = storescu(node.port, STS_CT)
    assert proc.returncode == 0, proc.stderr
    assert len(node.received) == 59
    assert scu_store(node.port, [small_ct(HOSTILE, 1)]) == [StoreStatus.INVALID_UID]


# -- the header scanner -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [c[0] for c in COMPRESSED] + ["CT_small.dcm", "rtplan.dcm", "nested_priv_SQ.dcm",
                                                                 "UN_sequence.dcm"])
@pytest.mark.parametrize("chunk_bytes", [7, 100, 1 << 20])
def test_header_scanner_agrees_with_pydicom(name: str, chunk_bytes: int) -> None:
    path = PYDICOM_DATA / name
    transfer_syntax, data = dataset_part(path)
    ds = pydicom.dcmread(path, force=True)
    scanner = HeaderScanner(transfer_syntax)
    fields = None
    for i in range(0, len(data), chunk_bytes):
        fields = scanner.feed(data[i : i + chunk_bytes], last=i + chunk_bytes >= len(data))
        if fields is not None:
            break
    assert fields is not None
    assert fields.sop_instance_uid == str(ds.get("SOPInstanceUID", ""))
    assert fields.sop_class_uid == str(ds.get("SOPClassUID", ""))
    assert fields.study_uid == str(ds.get("StudyInstanceUID", ""))
    assert fields.series_uid == str(ds.get("SeriesInstanceUID", ""))
    assert fields.modality == str(ds.get("Modality", ""))
    assert scanner.received_bytes < 64 * 1024 or len(data) < 64 * 1024  # reads the header, not the pixels


def test_header_scanner_implicit_sts_file() -> None:
    path = sorted(STS_CT.glob("*.dcm"))[0]
    transfer_syntax, data = dataset_part(path)
    assert transfer_syntax == ImplicitVRLittleEndian
    fields = HeaderScanner(transfer_syntax).feed(data[:4096], last=False)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert fields is not None and fields.series_uid == ds.SeriesInstanceUID and fields.modality == "CT"


def test_dcmtk_tools_exist() -> None:
    for tool in ("storescu", "echoscu", "storescp", "dcmcjpeg", "dcmcjpls"):
        assert Path(dcmtk(tool)).exists()
    assert shutil.which("mount") is not None


def test_tls_association_stores(start_node: Callable[..., Node], tmp_path: Path) -> None:
    import ssl

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                           str(cert), "-days", "1", "-subj", "/CN=localhost"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    node = start_node(ssl_context=server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    client.check_hostname = False

    ae = AE("TLSSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    silent = socket.create_connection(("127.0.0.1", node.port))  # never handshakes: must not block others
    started = time.monotonic()
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE", tls_args=(client, None))
    assert assoc.is_established and time.monotonic() - started < 5
    silent.close()
    try:
        datasets = [small_ct(generate_uid(), i, rows=256) for i in range(5)]
        assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0] * 5
    finally:
        assoc.release()
    assert len(node.files()) == 5
    for stored, ds in zip(sorted(node.received, key=lambda s: s.sop_instance_uid),
                          sorted(datasets, key=lambda d: d.SOPInstanceUID)):
        assert pydicom.dcmread(stored.path).PixelData == ds.PixelData
    plain = echoscu(node.port)  # a plain-TCP peer cannot talk to the TLS port
    assert plain.returncode != 0
