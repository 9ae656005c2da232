"""A case's study context for ``dicomnode evaluate`` and ``dicomnode process --context``: the other series of its
study on its frame of reference, found in folders, as the node finds them in its index.

Without a ``context`` key, a case's siblings are looked for among the other series folders next to the case's
folder (the subfolders of its parent, at most :data:`MAX_FOLDERS`): the header of each folder's first DICOM file is
read (top-level values only, no pixels) and the folder is a sibling when it holds an image series of the same
StudyInstanceUID and FrameOfReferenceUID (CT first, then MR, then the rest; at most
:data:`~dicomnode.jobs.spec.MAX_CONTEXT_SERIES`). A case's ``context = ["folder", ...]`` (relative to the data root)
names the folders instead (``context = []``: none). The chain checks each again before it reads it
(:func:`dicomnode.jobs.chain.study_siblings`) and reads it only when the series' own scene leaves a stretch unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dicomnode.jobs.spec import MAX_CONTEXT_SERIES, ContextSeries

__all__ = ["MAX_FOLDERS", "context_series", "sibling_folders"]

#: At most this many folders next to a case's folder are looked at (a data root with thousands of series folders
#: side by side is not a study).
MAX_FOLDERS = 64


def _first_tags(folder: Path) -> tuple[list[Path], dict[str, str]] | None:
    from dicomnode.io.headers import HeaderReadError, is_dicom_file, read_tags
    from dicomnode.net.scu import iter_dicom_files

    files = [Path(f) for f in iter_dicom_files([folder])]
    first = next((f for f in files if is_dicom_file(f)), None)
    if first is None:
        return None
    try:
        return files, read_tags(first)
    except (HeaderReadError, OSError):
        return None


def sibling_folders(series_folder: Path) -> list[Path]:
    """The other series folders next to ``series_folder`` (its parent's subfolders, sorted; at most
    :data:`MAX_FOLDERS`)."""
    parent = series_folder.resolve().parent
    own = series_folder.resolve()
    return sorted(p for p in parent.iterdir() if p.is_dir() and p.resolve() != own)[:MAX_FOLDERS]


def context_series(series_folder: Path, first_file: Path, folders: Sequence[Path] | None = None
                   ) -> tuple[ContextSeries, ...]:
    """The study context of the series in ``series_folder`` (whose first DICOM file is ``first_file``): the
    folders of ``folders`` (default: :func:`sibling_folders`) that hold an image series of the same study and frame
    of reference, CT first, then MR, then the rest, at most :data:`~dicomnode.jobs.spec.MAX_CONTEXT_SERIES`."""
    from dicomnode.analysis.scene_context import modality_rank
    from dicomnode.io.headers import is_image_storage, read_tags

    own = read_tags(first_file)
    study, frame = own.get("StudyInstanceUID", ""), own.get("FrameOfReferenceUID", "")
    if not study or not frame:
        return ()
    found: list[tuple[int, str, ContextSeries]] = []
    for folder in (sibling_folders(series_folder) if folders is None else folders):
        got = _first_tags(Path(folder))
        if got is None:
            continue
        files, tags = got
        if (tags.get("StudyInstanceUID") != study or tags.get("FrameOfReferenceUID") != frame
                or tags.get("SeriesInstanceUID") == own.get("SeriesInstanceUID")
                or not is_image_storage(tags.get("SOPClassUID", ""))):
            continue
        modality = tags.get("Modality", "")
        found.append((modality_rank(modality), str(folder), ContextSeries(modality, tuple(map(str, files)))))
    found.sort(key=lambda t: (t[0], t[1]))
    return tuple(c for _, _, c in found[:MAX_CONTEXT_SERIES])
