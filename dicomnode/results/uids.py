"""Deterministic UIDs for result objects: same source series, profile and kind -> same UID.

A re-run of a job therefore re-sends the same SEG/SR (same Series and SOP Instance UIDs) instead of adding a second
copy to the PACS (style.md habit 12).

Two forms of UID are made:

* Under the default root :data:`DEFAULT_ROOT` ``"2.25."`` (PS3.5 B.2, UUID-derived, needs no registered root): the
  UID is ``2.25.<decimal of a name-based UUID>``, the UUID being :func:`uuid.uuid5` of the key in dicomnode's
  namespace :data:`DICOMNODE_UUID_NAMESPACE`. ``pydicom.uid.generate_uid(prefix=None)`` would make a 2.25 UID too but
  IGNORES ``entropy_srcs`` (it is random), so it is never used here.
* Under any other root (e.g. an organisation's registered root such as ``"1.2.826.0.1.3680043.10.1234."``, or
  pydicom's ``PYDICOM_ROOT_UID``): ``generate_uid(prefix=root, entropy_srcs=[key])``, a SHA-512 hash of the key
  appended to the root and cut to 64 characters.

The key is ``source_series_uid | profile | profile_version | kind``, joined with ``|`` (pydicom joins entropy sources
with "", which would let ``("ab", "c")`` and ``("a", "bc")`` collide).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from pydicom.uid import UID, generate_uid

__all__ = ["DEFAULT_ROOT", "DICOMNODE_UUID_NAMESPACE", "ResultUids", "result_uid"]

#: The default UID root: UUID-derived UIDs (PS3.5 B.2), globally unique without a registered root.
DEFAULT_ROOT = "2.25."
#: Namespace of dicomnode's name-based (version 5) UUIDs. Fixed forever: changing it changes every result UID.
DICOMNODE_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "dicomnode.results")

_ROOT_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")
#: Roots longer than this leave too few digits for the hash (generate_uid cuts to 64 characters).
_MAX_ROOT_CHARS = 40
_SEP = "|"


def _check_root(root: str) -> None:
    if not _ROOT_RE.match(root) or len(root) > _MAX_ROOT_CHARS:
        raise ValueError(
            f"UID root {root!r} must be digits and dots, end with '.', have no leading zeros and be at most "
            f"{_MAX_ROOT_CHARS} characters, e.g. '2.25.' or '1.2.826.0.1.3680043.10.1234.'"
        )


def _check_part(name: str, value: str) -> None:
    if not value or _SEP in value:
        raise ValueError(f"{name} must be a non-empty string without {_SEP!r}, got {value!r}")


def result_uid(root: str, source_series_uid: str, profile: str, profile_version: str, kind: str) -> UID:
    """A UID that depends only on its inputs.

    Parameters
    ----------
    root : str
        UID root ending with ".", e.g. :data:`DEFAULT_ROOT` ("2.25.") or an organisation's registered root.
    source_series_uid : str
        Series Instance UID of the analysed source series.
    profile : str
        Name of the analysis profile, e.g. "ct-body".
    profile_version : str
        Version of the profile; a new version makes new objects, not replacements.
    kind : str
        What the UID identifies, e.g. "seg.series", "seg.instance.1", "sr.series", "tracking.body".

    Returns
    -------
    pydicom.uid.UID
        A valid UID of at most 64 characters; the same inputs always give the same UID.

    Raises
    ------
    ValueError
        When the root is not a valid UID prefix, or a part is empty or contains "|".
    """
    _check_root(root)
    for name, value in (("source_series_uid", source_series_uid), ("profile", profile),
                        ("profile_version", profile_version), ("kind", kind)):
        _check_part(name, value)
    key = _SEP.join((source_series_uid, profile, profile_version, kind))
    if root == DEFAULT_ROOT:
        uid = UID(f"{DEFAULT_ROOT}{uuid.uuid5(DICOMNODE_UUID_NAMESPACE, key).int}")
    else:
        uid = generate_uid(prefix=root, entropy_srcs=[key])
    if not uid.is_valid:  # cannot happen with a checked root; a guard against a silent invalid UID
        raise ValueError(f"made an invalid UID {uid!r} from root {root!r}")
    return uid


@dataclass(frozen=True, slots=True)
class ResultUids:
    """The UIDs of the results made from one source series by one profile version.

    Use :meth:`for_series` to make one, the properties for the SEG and the SR, and :meth:`uid`,
    :meth:`series_uid` and :meth:`instance_uid` for further kinds (derived series, tracking UIDs).

    Parameters
    ----------
    root : str
        UID root ending with ".".
    source_series_uid : str
        Series Instance UID of the source series.
    profile, profile_version : str
        Name and version of the analysis profile.
    """

    root: str
    source_series_uid: str
    profile: str
    profile_version: str

    def __post_init__(self) -> None:
        _check_root(self.root)
        _check_part("source_series_uid", self.source_series_uid)
        _check_part("profile", self.profile)
        _check_part("profile_version", self.profile_version)

    @classmethod
    def for_series(cls, root: str | None, source_series_uid: str, profile: str, profile_version: str) -> "ResultUids":
        """The result UIDs of one (source series, profile, version); ``root=None`` means :data:`DEFAULT_ROOT`."""
        return cls(root or DEFAULT_ROOT, str(source_series_uid), profile, profile_version)

    def uid(self, kind: str) -> UID:
        """The UID of ``kind`` (any stable name without "|"), e.g. "tracking.body"."""
        return result_uid(self.root, self.source_series_uid, self.profile, self.profile_version, kind)

    def series_uid(self, kind: str) -> UID:
        """Series Instance UID of the result series ``kind`` ("seg", "sr", "derived.denoised", ...)."""
        return self.uid(f"{kind}.series")

    def instance_uid(self, kind: str, number: int = 1) -> UID:
        """SOP Instance UID of instance ``number`` (1-based) of the result series ``kind``."""
        if number < 1:
            raise ValueError(f"instance number must be >= 1, got {number}")
        return self.uid(f"{kind}.instance.{number}")

    @property
    def seg_series_uid(self) -> UID:
        return self.series_uid("seg")

    @property
    def seg_instance_uid(self) -> UID:
        return self.instance_uid("seg")

    @property
    def sr_series_uid(self) -> UID:
        return self.series_uid("sr")

    @property
    def sr_instance_uid(self) -> UID:
        return self.instance_uid("sr")

    def tracking_uid(self, label: str) -> UID:
        """Tracking UID of the finding or segment called ``label`` (shared by the SEG segment and its SR group)."""
        return self.uid(f"tracking.{label}")
