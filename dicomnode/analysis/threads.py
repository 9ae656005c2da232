"""How many threads an analysis function may use in this process.

A job process shares its host with others: the local pool sets ``DICOMNODE_THREADS`` to each worker's share of the
cores, and Dask workers started as documented have ``OMP_NUM_THREADS=1``. A lone process (``dicomnode process``)
uses every core, up to 8. Threaded filters and FFTs ask here instead of taking every core, which would make two
single-core workers fight over both cores.
"""

from __future__ import annotations

import os

__all__ = ["thread_budget"]


def thread_budget(cap: int = 8) -> int:
    """``DICOMNODE_THREADS``, else ``OMP_NUM_THREADS``, else the number of cores (at most ``cap``); at least 1."""
    for name in ("DICOMNODE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, min(os.cpu_count() or 1, cap))
