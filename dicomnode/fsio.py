"""Atomic file writes for results and models: temp file in the same folder, fsync, rename.

A reader (the outbox, a re-run, a worker) never sees half a file: it finds the old one or the new one.
(Received instances have their own, stricter commit in :mod:`dicomnode.store.spool`.)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable[[str], None], *, suffix: str = "") -> None:
    """Call ``write(tmp_path)`` to fill a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, *, suffix: str = "") -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda p: Path(p).write_bytes(data), suffix=suffix)
