"""The validators that judge what we make: dicom3tools' ``dciodvfy`` and Pixelmed's ``DicomInstanceValidator`` and
``DicomSRValidator`` (Debian ``pixelmed-apps``, the validators of the IHE AIR Connectathon).

Each run gives a :class:`Report` with the error and warning lines of the tool. Tests assert ``report.errors == ()``
(:func:`assert_valid`); warnings are allowed and listed in docs/conformance.md.

Pixelmed's validators are XSLT programs run by Java. ``DicomSRValidator`` compiles a 6 MB stylesheet (about 20 s of
CPU) and its heap grows with the number of content items (a 300-measurement SR needs more than 2 GB), so
the tests keep the number of SR validations small; its command line takes one file per run, so
:func:`sr_validators` runs several in one JVM through a small driver of ours (tests/pixelmed/BatchSRValidator.java,
compiled with ``javac`` from ``default-jdk-headless``), the stylesheets compiled once. The
XPath limits of the JDK (``jdk.xml.xpath*Limit``) stop it on large documents; they are lifted, as Pixelmed's own
scripts do. ``DicomInstanceValidator`` of Debian's 20220618 release knows the IODs of the enhanced images, the raw data
and the Segmentation only; for others (CT, MR, PET Image, SR) it says "IOD (SOP Class) unrecognized", reported here
as ``recognized=False`` (for an SR, ``DicomSRValidator`` checks the IOD and the templates; for classic images,
``dciodvfy`` checks the IOD).

None of the tools is ever skipped: a missing one fails the test with the package to install.

:func:`process` runs ``dicomnode process`` on a series folder; :func:`assert_outputs_valid` checks everything it made
(dciodvfy on every file, DicomInstanceValidator on the SEG and each derived series' first image, the source's
identities on every file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.charset import python_encoding
from pydicom.multival import MultiValue

__all__ = ["Report", "assert_outputs_valid", "assert_same_identities", "assert_valid", "dciodvfy", "instance_validator",
           "pixelmed_classpath", "process", "source_header", "sr_validator", "sr_validators"]

#: Heap of the SR validator's JVM: an 80-measurement SR needs about 1.2 GB of live heap; 3 GB leaves room.
SR_VALIDATOR_HEAP = os.environ.get("DICOMNODE_TEST_SR_HEAP", "3g")
_JAVA_XML_LIMITS = ("-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathTotalOpLimit=0")
#: Java's output in UTF-8 whatever the locale: the messages quote the characters they object to.
_JAVA_UTF8 = ("-Dfile.encoding=UTF-8", "-Dstdout.encoding=UTF-8", "-Dstderr.encoding=UTF-8")
_SR_DONE = "IOD validation complete"
_UNRECOGNIZED = "IOD (SOP Class) unrecognized"


@dataclass(frozen=True, slots=True)
class Report:
    """What one validator said about one file."""

    tool: str
    path: Path
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    recognized: bool
    output: str

    def summary(self) -> str:
        head = f"{self.tool} {self.path}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        return "\n".join([head, *self.errors[:40]])


def _lines(out: str, prefix: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in out.splitlines() if line.strip().startswith(prefix))


def dciodvfy(path: Path | str) -> Report:
    """dicom3tools' IOD check of one file."""
    exe = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
    assert Path(exe).exists(), "dciodvfy is missing: apt-get install -y dicom3tools"
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    return Report("dciodvfy", Path(path), _lines(out, "Error"), _lines(out, "Warning"), True, out)


def pixelmed_classpath() -> str:
    """The Pixelmed jar installed by ``pixelmed-apps`` (through its dependency ``libpixelmed-java``)."""
    java = shutil.which("java")
    assert java, "java is missing: apt-get install -y pixelmed-apps (it brings a JRE)"
    listed = subprocess.run(["dpkg", "-L", "libpixelmed-java"], capture_output=True, text=True)
    jars = [line for line in listed.stdout.splitlines() if line.endswith("/pixelmed.jar")]
    jar = Path(jars[0]) if jars else Path("/usr/share/java/pixelmed.jar")
    assert jar.exists(), "Pixelmed is missing: apt-get install -y pixelmed-apps"
    return str(jar)


def _java(main: str, args: Sequence[str], *, heap: str, timeout_s: float, classpath: str | None = None) -> str:
    cmd = ["java", f"-Xmx{heap}", *_JAVA_XML_LIMITS, *_JAVA_UTF8, "-cp", classpath or pixelmed_classpath(), main,
           *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout_s)
    out = proc.stdout + proc.stderr
    assert "OutOfMemoryError" not in out, f"{main} ran out of heap ({heap}) on {args}: the object is too large"
    assert proc.returncode == 0 and "Exception" not in proc.stderr, f"{main} failed on {args}:\n{out[-3000:]}"
    return proc.stdout


def instance_validator(path: Path | str, *, heap: str = "1g") -> Report:
    """Pixelmed's ``DicomInstanceValidator`` (IOD, modules, attributes) on one file."""
    out = _java("com.pixelmed.validate.DicomInstanceValidator", [str(path)], heap=heap, timeout_s=600)
    errors, declared = _declared_characters(path, _lines(out, "Error"))
    return Report("DicomInstanceValidator", Path(path), errors, _lines(out, "Warning") + declared,
                  _UNRECOGNIZED not in out, out)


def sr_validator(path: Path | str, *, heap: str = SR_VALIDATOR_HEAP) -> Report:
    """Pixelmed's ``DicomSRValidator`` (SR IOD and templates) on one file."""
    return sr_validators([path], heap=heap)[0]


def _sr_report(path: Path | str, out: str) -> Report:
    assert _SR_DONE in out, f"DicomSRValidator did not finish on {path}:\n{out[-3000:]}"
    errors, declared = _declared_characters(path, _lines(out, "Error"))
    return Report("DicomSRValidator", Path(path), errors, _lines(out, "Warning") + declared,
                  "Found Root Template" in out, out)


#: Our driver that runs DicomSRValidator on several files in one JVM (tests/pixelmed/BatchSRValidator.java).
_BATCH_SOURCE = Path(__file__).resolve().parent / "pixelmed" / "BatchSRValidator.java"
_BATCH_BEGIN, _BATCH_END = "=== dicomnode SR batch: begin ", "=== dicomnode SR batch: end "


def _batch_classpath() -> str | None:
    """The compiled batch driver's directory (compiled once per source and Pixelmed jar, shared by the xdist
    workers through an atomic rename), or None without ``javac`` (then one JVM per file, as Pixelmed's own command
    line)."""
    javac = shutil.which("javac")
    if javac is None:
        return None
    jar = pixelmed_classpath()
    key = hashlib.sha256(_BATCH_SOURCE.read_bytes() + jar.encode() + str(Path(jar).stat().st_mtime).encode())
    target = Path(tempfile.gettempdir()) / f"dicomnode-srbatch-{key.hexdigest()[:16]}"
    if not (target / "BatchSRValidator.class").is_file():
        work = Path(tempfile.mkdtemp(prefix="dicomnode-srbatch-build-"))
        proc = subprocess.run([javac, "-d", str(work), "-cp", jar, str(_BATCH_SOURCE)], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"javac failed on {_BATCH_SOURCE}:\n{proc.stderr[-3000:]}"
        try:
            work.rename(target)
        except OSError:  # another worker was first: its copy is the same
            shutil.rmtree(work, ignore_errors=True)
    return str(target)


def sr_validators(paths: Sequence[Path | str], *, heap: str = SR_VALIDATOR_HEAP) -> list[Report]:
    """Pixelmed's ``DicomSRValidator`` on each of ``paths``, all in one JVM when ``javac`` is there.

    Its command line takes one file per run and compiles its template stylesheets (about 20 s of CPU) each time;
    our driver (tests/pixelmed/BatchSRValidator.java) makes one validator and calls its ``validate(filename)``, what
    the command line calls with its default options, on each file: the same report per file (checked by
    tests/results/test_validators.py), the stylesheets compiled once. The heap must hold the largest report."""
    paths = list(paths)
    classpath = _batch_classpath()
    if classpath is None:
        return [_sr_report(p, _java("com.pixelmed.validate.DicomSRValidator", [str(p)], heap=heap, timeout_s=1800))
                for p in paths]
    out = _java("BatchSRValidator", [str(p) for p in paths], heap=heap, timeout_s=1800 * len(paths),
                classpath=f"{classpath}{os.pathsep}{pixelmed_classpath()}")
    reports = []
    for p in paths:
        begin, end = out.find(_BATCH_BEGIN + str(p) + "\n"), out.find(_BATCH_END + str(p) + "\n")
        assert 0 <= begin < end, f"BatchSRValidator gave no report for {p}:\n{out[-3000:]}"
        part = out[begin + len(_BATCH_BEGIN) + len(str(p)) + 1:end]
        assert "Exception: " not in part, f"DicomSRValidator failed on {p}:\n{part[-3000:]}"
        reports.append(_sr_report(p, part))
    return reports


_ILLEGAL = re.compile(r"Illegal character\(s\) '(.+?)' in value of (?:LO|SH|PN|ST|LT|UT|UC) VR")
_DEFAULT_REPERTOIRE = {"", "ISO_IR 6", "ISO 2022 IR 6"}


def _declared_characters(path: Path | str, errors: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(errors, errors that are no error) of a Pixelmed report.

    Pixelmed 20220618 checks LO, SH and PN text against the default repertoire (ASCII) whatever the Specific
    Character Set says (its CommonDicomIODValidationRules.xsl: "Illegal character(s)"), so a Patient's Name in
    German, Chinese or Japanese is an error to it even in a file that declares ISO_IR 100, ISO_IR 192 or ISO 2022
    IR 87; PS3.5 6.1 allows them there, and dciodvfy, which reads the character set, does. Such a line is no error
    when every character it quotes is non-ASCII and encodable in the file's declared Specific Character Set; a
    non-ASCII character in a file that declares none (ASCII), or one its set cannot encode, stays an error."""
    candidates = [(e, _ILLEGAL.search(e)) for e in errors]
    if not any(m for _, m in candidates):
        return errors, ()
    value = pydicom.dcmread(path, stop_before_pixels=True).get("SpecificCharacterSet", "")
    terms = [str(t or "").strip() for t in (value if isinstance(value, (list, MultiValue)) else [value])]
    codecs = ["ascii" if t in _DEFAULT_REPERTOIRE else python_encoding.get(t) for t in terms]
    if all(c == "ascii" for c in codecs) or None in codecs:
        return errors, ()

    def declared(char: str) -> bool:
        for codec in codecs:
            try:
                char.encode(codec)  # type: ignore[arg-type]
                return True
            except UnicodeEncodeError:
                continue
        return False

    kept, moved = [], []
    for line, m in candidates:
        chars = m.group(1) if m else ""
        if chars and all(ord(c) > 127 and declared(c) for c in chars):
            moved.append(f"{line} [not an error: in the declared Specific Character Set {terms}]")
        else:
            kept.append(line)
    return tuple(kept), tuple(moved)


def assert_valid(reports: Report | Sequence[Report]) -> None:
    """Fail with every error of every report (warnings pass)."""
    items = [reports] if isinstance(reports, Report) else list(reports)
    bad = [r for r in items if r.errors]
    assert not bad, "\n\n".join(r.summary() for r in bad)


def process(folder: Path, out: Path, *, profile: str | None = None, config: Path | None = None) -> dict:
    """`dicomnode process` on one series folder (with ``--profile`` and ``--config`` when given); results.json."""
    cmd = [sys.executable, "-m", "dicomnode", "process", str(folder), "--out", str(out), "-q"]
    if profile is not None:
        cmd += ["--profile", profile]
    if config is not None:
        cmd += ["--config", str(config)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, f"{folder}: {p.stderr[-3000:]}"
    return json.loads((out / "results.json").read_text())


def source_header(folder: Path) -> pydicom.Dataset:
    """The header of the first image of a series folder (not a Raw Data object)."""
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "Rows" in ds:
            return ds
    raise AssertionError(f"{folder}: no image")


def assert_outputs_valid(folder: Path, out: Path, res: dict) -> list[Path]:
    """dciodvfy on every output, Pixelmed's instance validator on the SEG and each derived series' first image,
    the source's identities on every output; the output paths."""
    files = [out / f for f in res["outputs"]]
    assert files and all(f.is_file() for f in files), res["outputs"]
    assert_valid([dciodvfy(f) for f in files])
    assert_same_identities(source_header(folder), files)
    segs = [f for f in files if f.name == "seg.dcm"]
    firsts = [f for f in files if f.match("derived/*/0001.dcm")]
    reports = [instance_validator(f) for f in segs + firsts]
    assert all(r.recognized for r in reports[:len(segs)]), [r.output for r in reports if not r.recognized]
    assert_valid(reports)  # Pixelmed 20220618 does not know the CT/MR/PET Image IODs: dciodvfy checks those
    return files


def assert_same_identities(source: pydicom.Dataset, files: list[Path]) -> None:
    """Patient ID, Study Instance UID and Patient's Name (as text) of every result equal the source's."""
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.StudyInstanceUID == source.StudyInstanceUID, f
        assert str(ds.PatientID or "") == str(source.get("PatientID", "") or ""), f
        assert str(ds.PatientName or "") == str(source.get("PatientName", "") or ""), f
