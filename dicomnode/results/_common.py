"""Small helpers shared by the result builders (SEG, SR): identity of our device, codes, source datasets."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

import highdicom as hd
from pydicom.charset import convert_encodings, encode_string, python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import format_number_as_ds

from dicomnode.analysis.volume import Code
from dicomnode.io.load import LoadedSeries
from dicomnode.results._clean import clean_header, clean_header_with_notes

log = logging.getLogger(__name__)

MANUFACTURER = "dicomnode"
MODEL_NAME = "dicomnode"
DEVICE_SERIAL_NUMBER = "0"
_MAX_LO_CHARS = 64


def software_version() -> str:
    """The installed dicomnode version (the SoftwareVersions of our objects)."""
    try:
        return metadata.version("dicomnode")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


SOFTWARE_VERSION = software_version()


def coded(code: Code | hd.sr.CodedConcept) -> hd.sr.CodedConcept:
    """Our :class:`~dicomnode.analysis.volume.Code` as a highdicom CodedConcept (code meanings cut to 64 chars)."""
    if isinstance(code, hd.sr.CodedConcept):
        return code
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=lo(code.meaning))


_TO_LATIN1 = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                            "\u2014": "-", "\u2212": "-", "\u2264": "<=", "\u2265": ">="})


def lo(text: str) -> str:
    """``text`` cut to fit a LO value (64 characters), typographic quotes and dashes as ASCII, control characters
    left out. Other characters stay: a builder calls :func:`fit_character_set` on the finished object, which writes
    it in UTF-8 when they do not fit the character set copied from the source (a ROI named "Läsion" on a series in
    the default repertoire)."""
    text = "".join(c for c in text.translate(_TO_LATIN1) if c >= " " and c != "\x7f")
    return text[:_MAX_LO_CHARS]


#: Type 2 attributes of the Patient and General Study modules: a result has them, empty when the source lacks them.
_PATIENT_STUDY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "ReferringPhysicianName", "StudyID", "AccessionNumber")


def source_datasets(series: LoadedSeries) -> list[Dataset]:
    """The source headers to hand to highdicom: the first one cleaned (highdicom copies its Patient and Study
    modules into the result), the others as they are. The caller's datasets are never changed."""
    headers = list(series.headers)
    first = clean_header(headers[0])
    _name_the_default_repertoire(first)
    for keyword in _PATIENT_STUDY_TYPE2:
        if keyword not in first:
            setattr(first, keyword, None)  # Type 2: present, empty when the source lacks it (highdicom reads them)
    _share_uniform_geometry(first)
    if not series.is_multiframe and first.get("SliceThickness") in (None, ""):
        # highdicom's Pixel Measures of the SEG read Slice Thickness of a single-frame source (Type 2 in the CT and MR
        # Image modules: sites leave it out or empty); the volume's slice spacing is the thickness the SEG's voxels
        # stand for
        first.SliceThickness = format_number_as_ds(float(series.volume.spacing_mm[0]))
    return [first, *headers[1:]]


def _character_set_terms(ds: Dataset) -> list[str]:
    value = ds.get("SpecificCharacterSet", "")
    return [str(v or "").strip() for v in (value if isinstance(value, (MultiValue, list, tuple)) else [value])]


def _name_the_default_repertoire(ds: Dataset) -> None:
    """ISO 2022 code extensions (e.g. Japanese: ``\\ISO 2022 IR 87``) leave value 1 empty for the default repertoire;
    highdicom refuses the empty term, so the copy it reads names it: ``ISO 2022 IR 6``, the same repertoire."""
    terms = _character_set_terms(ds)
    if len(terms) > 1 and terms[0] == "":
        ds.SpecificCharacterSet = ["ISO 2022 IR 6", *terms[1:]]


#: Python codecs whose every character is one byte (no byte of a character can look like a delimiter).
_SINGLE_BYTE = {"ascii", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso_ir_126", "iso_ir_127", "iso_ir_138",
                "iso_ir_144", "iso_ir_148", "iso_ir_166", "UTF8"}
#: Default repertoire terms: ASCII only (pydicom would write Latin-1 bytes under them).
_DEFAULT_REPERTOIRE = {"", "ISO_IR 6", "ISO 2022 IR 6"}
_TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}
UTF8 = "ISO_IR 192"


def _codecs(ds: Dataset) -> list[str] | None:
    """Python codecs of the dataset's Specific Character Set (None: a term pydicom does not know)."""
    out = []
    for term in _character_set_terms(ds):
        if term in _DEFAULT_REPERTOIRE:
            out.append("ascii")
        elif term in python_encoding:
            out.append(python_encoding[term])
        else:
            return None
    return out


def _encodable(text: str, codecs: list[str]) -> bool:
    if len(codecs) == 1:
        try:
            text.encode(codecs[0])
        except UnicodeEncodeError:
            return False
        return True
    for char in text:  # ISO 2022: each character from one of the listed repertoires
        if not any(_encodable(char, [c]) for c in codecs):
            return False
    return True


def _unambiguous(text: str, terms: list[str]) -> bool:
    """Whether ``text`` encoded in ``terms`` holds no backslash byte that is not a backslash of the text: the second
    byte of a JIS X 0208 (ISO 2022 IR 87) or GBK character can be 0x5C, and a reader that splits values before
    decoding them (dciodvfy, many PACS) then sees two values where there is one ("腿" is 0x42 0x5C). (PN's ``^`` and
    ``=`` inside such characters are left alone: PS3.5 Annex H's own example has them, and readers parse a PN value
    by its escape sequences.)"""
    try:
        encoded = encode_string(text, convert_encodings(terms))
    except (UnicodeError, LookupError, ValueError):
        return False
    return encoded.count(b"\\") == text.count("\\")


def _fits(text: str, codecs: list[str], terms: list[str]) -> bool:
    if not _encodable(text, codecs):
        return False
    multibyte = any(c not in _SINGLE_BYTE for c in codecs)
    return not multibyte or text.isascii() or _unambiguous(text, terms)


def fit_character_set(ds: Dataset) -> bool:
    """Make the Specific Character Set of a result object hold every character of its text.

    A result mixes text of the source (names, descriptions in the source's character set) with text we add (labels
    and ROI names of other objects, code meanings). When some character cannot be written in the character set the
    object got from its source (the default repertoire is ASCII only), the object is switched to UTF-8
    (``ISO_IR 192``), which holds them all; pydicom would otherwise write replacement characters, or Latin-1 bytes
    under a declared ASCII. So it is too when a multi-byte set (ISO 2022 IR 87, GBK) would put a delimiter byte inside
    a character (:func:`_unambiguous`). Values are decoded before the switch, so nothing is re-read in the new set.

    Parameters
    ----------
    ds : pydicom.Dataset
        A result object about to be written (changed in place).

    Returns
    -------
    bool
        True when the character set was switched to UTF-8.
    """
    codecs = _codecs(ds)
    if codecs == ["UTF8"]:
        return False
    texts = []
    for elem in ds.iterall():  # converts raw elements with the current character set
        if elem.VR in _TEXT_VRS and elem.value is not None:
            texts.extend(str(v) for v in (elem.value if isinstance(elem.value, MultiValue) else [elem.value]))
    if codecs is not None and all(_fits(text, codecs, _character_set_terms(ds)) for text in texts):
        return False
    ds.SpecificCharacterSet = UTF8
    return True


def _share_uniform_geometry(ds: Dataset) -> None:
    """In a multi-frame copy, put Pixel Measures and Plane Orientation into the shared functional groups when every
    frame has the same one (Siemens XA puts them per frame; highdicom reads them from the shared group only). The
    copy is highdicom's input, never written."""
    if "PerFrameFunctionalGroupsSequence" not in ds or "SharedFunctionalGroupsSequence" not in ds:
        return
    shared = ds.SharedFunctionalGroupsSequence[0]
    frames = ds.PerFrameFunctionalGroupsSequence
    for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if keyword in shared or not all(keyword in f for f in frames):
            continue
        first = frames[0][keyword]
        if all(f[keyword].value == first.value for f in frames):
            setattr(shared, keyword, first.value)


def source_notes(series: LoadedSeries) -> list[str]:
    """What :func:`source_datasets` (and the derived series) change in the copied source header, one note per
    attribute (keyword and rule, never the value), for ``results.json``."""
    return [n.text() for n in clean_header_with_notes(series.headers[0])[1]]


#: Body Part Examined values of paired body parts (the General Series module's Laterality condition), as dciodvfy
#: knows them.
PAIRED_BODY_PARTS = frozenset({
    "ANKLE", "ARM", "BREAST", "BUTTOCK", "CALCANEUS", "CALF", "CAROTID", "CHEEK", "CLAVICLE", "CORNEA", "EAR", "ELBOW",
    "EXTREMITY", "EYE", "EYELID", "FEMUR", "FINGER", "FOOT", "HAND", "HIP", "HUMERUS", "KIDNEY", "KNEE", "LEG",
    "LUNG", "ORBIT", "PAROTID", "SCAPULA", "SCLERA", "SHOULDER", "SUBMANDIBULAR", "THIGH", "THUMB", "TMJ", "WRIST",
    "ZYGOMA",
})


#: Body Part Examined -> anatomic region (SNOMED CT; PS3.16 Annex L), for the Frame Anatomy of our SEG.
BODY_PART_REGIONS: dict[str, Code] = {
    "HEAD": Code("69536005", "SCT", "Head"), "BRAIN": Code("12738006", "SCT", "Brain"),
    "SKULL": Code("89546000", "SCT", "Skull"), "NECK": Code("45048000", "SCT", "Neck"),
    "CHEST": Code("51185008", "SCT", "Thorax"), "THORAX": Code("51185008", "SCT", "Thorax"),
    "LUNG": Code("39607008", "SCT", "Lung"), "BREAST": Code("76752008", "SCT", "Breast"),
    "ABDOMEN": Code("818981001", "SCT", "Abdomen"), "PELVIS": Code("816092008", "SCT", "Pelvis"),
    "LIVER": Code("10200004", "SCT", "Liver"), "KIDNEY": Code("64033007", "SCT", "Kidney"),
    "EXTREMITY": Code("66019005", "SCT", "Limb"), "THIGH": Code("68367000", "SCT", "Thigh"),
    "LEG": Code("30021000", "SCT", "Lower leg"), "KNEE": Code("72696002", "SCT", "Knee"),
    "ARM": Code("53120007", "SCT", "Upper limb"), "SHOULDER": Code("16982005", "SCT", "Shoulder"),
    "HIP": Code("24136001", "SCT", "Hip joint"), "SPINE": Code("421060004", "SCT", "Spine"),
    "WHOLEBODY": Code("38266002", "SCT", "Entire body"),
}
_ENTIRE_BODY = Code("38266002", "SCT", "Entire body")


def frame_anatomy(source: Dataset) -> Dataset:
    """A Frame Anatomy item (shared functional group) for an object derived from ``source``: its anatomic region
    from Body Part Examined (Entire body when not named or not in :data:`BODY_PART_REGIONS`) and Frame Laterality:
    the source's R or L; U (unpaired) for an unpaired or unnamed body part; B for a paired one whose side the source
    does not give (the field of view may hold both: the least wrong claim Frame Laterality allows)."""
    side = series_laterality(source)
    body_part = str(source.get("BodyPartExamined", "") or "").strip().upper()
    region = BODY_PART_REGIONS.get(body_part, _ENTIRE_BODY)
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = region.value, region.scheme, region.meaning
    item = Dataset()
    item.AnatomicRegionSequence = [code]
    item.FrameLaterality = side if side in ("R", "L") else ("B" if body_part in PAIRED_BODY_PARTS else "U")
    return item


def series_laterality(source: Dataset) -> str | None:
    """Laterality (General Series, Type 2C) for an object derived from ``source``: the source's own R or L, else its
    single Image Laterality R or L; "" (unknown) when the body part is paired or not named; None (leave it out)
    for a named unpaired body part."""
    for keyword in ("Laterality", "ImageLaterality"):
        value = str(source.get(keyword, "") or "").strip().upper()
        if value in ("R", "L"):
            return value
    body_part = str(source.get("BodyPartExamined", "") or "").strip().upper()
    if not body_part or body_part in PAIRED_BODY_PARTS:
        return ""
    return None


#: Source attributes whose values identify the patient: a library warning that quotes one is not passed on.
_IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "OtherPatientIDs",
                "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientAddress",
                "PatientTelephoneNumbers", "ReferringPhysicianName", "StudyID")
#: highdicom's warning about a Patient's Name of one component (highdicom.valuerep.check_person_name, called by
#: every highdicom SOP class for the Patient's Name it copies): it quotes the name.
PERSON_NAME_WARNING = "is unlikely to represent the intended person name"


def _identifying_texts(source: Dataset) -> set[str]:
    out = set()
    for keyword in _IDENTIFYING:
        value = source.get(keyword)
        values = value if isinstance(value, (MultiValue, list, tuple)) else [value]
        for v in values:
            text = str(v or "").strip()
            if len(text) >= 3:  # a 1-2 character ID would match any text; it identifies no one alone
                out.add(text)
                out.update(part for part in text.replace("=", "^").split("^") if len(part) >= 3)
    return out


#: Serialises :func:`warnings_without_phi` across threads (re-entrant: a block may nest in the same thread).
_WARNINGS_LOCK = threading.RLock()


@contextmanager
def warnings_without_phi(source: Dataset, *, series_uid: str, what: str) -> Iterator[None]:
    """Build a result with highdicom and pass on no library warning that quotes the patient's identity.

    highdicom warns with the Patient's Name quoted when it has one component (``The string "STS_001" is unlikely to
    represent the intended person name``, raised at our call of its SOP class) - a valid PN that we copy as the
    source wrote it (section 3.1 of docs/conformance.md), so the input is not "fixed". Inside the block every warning
    is caught; afterwards each one whose text holds an identifying value of ``source`` (Patient's Name, ID, birth
    date, accession number...) or is highdicom's person name warning becomes one PHI-free log line (the series UID
    and what was built); every other warning is raised again, once, as it came, for the caller's filters.

    Parameters
    ----------
    source : pydicom.Dataset
        The source header the result copies its patient from.
    series_uid : str
        The source's Series Instance UID, for the log line.
    what : str
        What is built ("SEG", "SR", ...), for the log line.

    Notes
    -----
    :func:`warnings.catch_warnings` changes process-wide state (the filters and ``showwarning``) and restores it on
    leaving. Two threads inside such blocks at once (a threaded Dask worker running two jobs) would restore each
    other's state out of order and leave ``showwarning`` appending to a finished block's list: every later warning
    of the process lost. So the block holds a process-wide lock (:data:`_WARNINGS_LOCK`): result building in one
    process is one at a time. A warning another thread raises during the block is caught here too and passed on
    or logged by the same rule.
    """
    phi = _identifying_texts(source)
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # nothing raised inside highdicom (an "error" filter applies on re-raising)
        yield
    seen: set[tuple[object, ...]] = set()
    withheld = 0
    for w in caught:
        text = str(w.message)
        if PERSON_NAME_WARNING in text or any(v in text for v in phi):
            withheld += 1
            continue
        key = (w.category, text, w.filename, w.lineno)
        if key not in seen:
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if withheld:
        log.info("library warnings quoting patient data withheld",
                 extra={"series_uid": series_uid, "result": what, "warnings": withheld,
                        "reason": "the source's Patient's Name has one component (valid PN, copied as written) "
                                  "or another identifying value was quoted"})
