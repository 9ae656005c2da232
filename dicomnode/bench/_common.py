"""What the benchmarks share: free loopback ports, waiting for a listener, DCMTK's environment, and the synthetic
CT series (an elliptic body with a dense blob, fresh UIDs per copy) that the ingest, index and chaos benchmarks
send. Bench-only: nothing here is used by the node."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np

__all__ = ["SyntheticCT", "env_nodelay", "free_port", "listening", "wait_for_port"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 60.0) -> None:
    """Wait until 127.0.0.1:`port` listens; raise if `proc` exits first or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        if listening(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def env_nodelay() -> dict[str, str]:
    """The environment with ``TCP_NODELAY=1`` (DCMTK's tools otherwise wait on Nagle for small PDUs)."""
    return dict(os.environ, TCP_NODELAY="1")


class SyntheticCT:
    """Copies of one synthetic CT series (an elliptic body at 40 HU, noise, a 300 HU blob), each with fresh UIDs,
    reusing the pixel bytes.

    Parameters
    ----------
    slices : int
        Number of slices.
    rng : numpy.random.Generator
        Source of the noise.
    size : int
        Rows and columns (square slices).
    fov_mm : float
        Field of view; pixel spacing is ``fov_mm / size``.
    thickness_mm : float
        Slice thickness and spacing.
    name : str
        Patient name and ID stem (a bench's own, never a person's).
    noise_sd : float
        Standard deviation of the noise in HU.
    breathing_blob : bool
        Whether the blob's radius changes from slice to slice (else a cylinder).
    """

    def __init__(self, slices: int, rng: np.random.Generator, *, size: int = 512, fov_mm: float = 409.6,
                 thickness_mm: float = 1.5, name: str = "Ingest", noise_sd: float = 20.0,
                 breathing_blob: bool = True) -> None:
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

        self.slices = slices
        self.thickness_mm = thickness_mm
        half = size // 2
        yy, xx = np.mgrid[-half:half, -half:half]
        body = (xx**2 / (0.78 * half) ** 2 + yy**2 / (0.59 * half) ** 2) < 1.0
        self._pixels: list[bytes] = []
        for z in range(slices):
            img = np.where(body, 40, -1000).astype(np.int16)
            img += rng.normal(0, noise_sd, img.shape).astype(np.int16)
            radius = half * (0.117 + (0.039 * np.sin(z / 20) if breathing_blob else 0.0))
            img[(xx - half // 6) ** 2 + (yy + half // 12) ** 2 < radius**2] = 300
            self._pixels.append(img.tobytes())
        self.slice_bytes = len(self._pixels[0])
        spacing = fov_mm / size
        self._origin = -fov_mm / 2
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.Modality = "CT"
        ds.PatientName = f"Bench^{name}"
        ds.PatientID = f"BENCH-{name.upper()}"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.SeriesNumber = 1
        ds.Manufacturer = "dicomnode bench"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = thickness_mm
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        self._template = ds

    def write(self, folder: Path, *, parts: int = 1) -> tuple[str, dict[Path, str], list[Path]]:
        """Write one copy with fresh UIDs into `folder` (or `parts` sub-folders ``part<i>``).

        Returns (Series Instance UID, {file: SOP Instance UID}, the folders written)."""
        from pydicom.uid import generate_uid

        study, series = generate_uid(), generate_uid()
        folders = [folder / f"part{i}" for i in range(parts)] if parts > 1 else [folder]
        for f in folders:
            f.mkdir(parents=True, exist_ok=True)
        ds = self._template
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = generate_uid()
        sops: dict[Path, str] = {}
        for z in range(self.slices):
            sop = generate_uid()
            ds.SOPInstanceUID = sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = z + 1
            ds.ImagePositionPatient = [self._origin, self._origin, -self.thickness_mm * z]
            ds.SliceLocation = -self.thickness_mm * z
            ds.PixelData = self._pixels[z]
            path = folders[z * len(folders) // self.slices] / f"{z:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            sops[path] = sop
        return series, sops, folders
