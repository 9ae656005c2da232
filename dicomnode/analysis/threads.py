"""How many threads an analysis function may use in this process.

A job process shares its host with others: the local pool sets ``DICOMNODE_THREADS`` to each worker's share of the
cores, and Dask workers started as documented have ``OMP_NUM_THREADS=1``. A lone process (``dicomnode process``)
uses every core, up to 8. Threaded filters and FFTs ask here instead of taking every core, which would make two
single-core workers fight over both cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from scipy import ndimage as ndi

__all__ = ["MIN_PARALLEL_VOXELS", "gaussian_filter", "pin_blas_threads", "slab_runs", "thread_budget", "thread_map"]

T = TypeVar("T")
R = TypeVar("R")


def thread_budget(cap: int = 8) -> int:
    """``DICOMNODE_THREADS``, else ``OMP_NUM_THREADS``, else the number of cores (at most ``cap``); at least 1."""
    for name in ("DICOMNODE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, min(os.cpu_count() or 1, cap))


#: the environment variables the BLAS libraries read when they are loaded (a library loaded later, such as the
#: OpenBLAS of scipy.linalg beside numpy's own, takes its thread count from them)
_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_blas_pinned = False


def pin_blas_threads() -> bool:
    """One thread for the BLAS libraries of this process, from now on (once per process; True when done).

    The analysis runs its own threads (:func:`thread_budget`); a BLAS's threads beside them only oversubscribe the
    cores (OpenBLAS's idle threads spin: 0.2-0.7 CPU s of a features step) and make a dot product's sum depend on
    the machine: numpy's OpenBLAS splits a long vector over as many threads as there are cores, so a standard
    deviation or a Geary's C differed in its last bits between a 2-core pool worker, an 8-core host and a Dask
    worker started with ``OMP_NUM_THREADS=1``. Pinned, the same series gives the same values on any of them.
    The job processes, ``dicomnode`` commands and the analysis runner call it; the libraries already loaded are
    set through threadpoolctl, those loaded later through their environment variables."""
    global _blas_pinned
    if _blas_pinned:
        return True
    for name in _BLAS_ENV:
        os.environ[name] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of the package (and of scikit-learn)
        return False
    threadpool_limits(limits=1, user_api="blas")
    _blas_pinned = True
    return True


#: Below this many voxels a filter runs in one call (threads cost more than they give).
MIN_PARALLEL_VOXELS = 1 << 20


def gaussian_filter(image: np.ndarray, sigma: float | Sequence[float], *, mode: str = "reflect",
                    output: np.ndarray | type | None = None, truncate: float = 4.0, cval: float = 0.0,
                    workers: int | None = None) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma, mode=mode, output=output, truncate=truncate, cval=cval)``,
    bit for bit, with each 1-D pass split across :func:`thread_budget` threads (scipy.ndimage releases the GIL).

    scipy filters the axes one after the other, each pass reading the previous pass's output; a pass along one
    axis treats every line along it on its own, so splitting the lines into blocks along another axis changes no
    value. ``output`` may be ``image`` itself (in place, as scipy allows) or a dtype, as in scipy. A small image
    (fewer than :data:`MIN_PARALLEL_VOXELS`) or a budget of one thread is filtered in one call.
    """
    image = np.asarray(image)
    workers = workers or thread_budget()
    if workers < 2 or image.size < MIN_PARALLEL_VOXELS or image.ndim < 2:
        return ndi.gaussian_filter(image, sigma, mode=mode, output=output, truncate=truncate, cval=cval)
    sigmas = [float(s) for s in (np.broadcast_to(np.asarray(sigma, dtype=float), (image.ndim,)))]
    if isinstance(output, np.ndarray):
        if output.shape != image.shape:
            raise ValueError(f"output shape {output.shape} is not the image's {image.shape}")
        out = output
    else:
        out = np.empty(image.shape, dtype=image.dtype if output is None else np.dtype(output))
    src = image
    passes = [ax for ax in range(image.ndim) if sigmas[ax] > 1e-15]
    if not passes:
        out[...] = image
        return out
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        for ax in passes:
            split = max((a for a in range(image.ndim) if a != ax), key=lambda a: image.shape[a])
            edges = np.linspace(0, image.shape[split], min(image.shape[split], 2 * workers) + 1).astype(int)

            def run(i: int, ax: int = ax, split: int = split, src: np.ndarray = src) -> None:
                sl = [slice(None)] * image.ndim
                sl[split] = slice(int(edges[i]), int(edges[i + 1]))
                block = tuple(sl)
                ndi.gaussian_filter1d(src[block], sigmas[ax], axis=ax, output=out[block], mode=mode, cval=cval,
                                      truncate=truncate)

            list(pool.map(run, range(len(edges) - 1)))
            src = out
    return out


def slab_runs(n: int, slab: int, workers: int | None = None, *, min_slabs: int = 4) -> list[int]:
    """Where ``n`` slices, taken ``slab`` at a time, are cut into runs of whole slabs for up to ``workers`` threads
    (default :func:`thread_budget`), each run at least ``min_slabs`` slabs: ``[0, c1, ..., n]`` (``[0, n]``: one run)."""
    n_slabs = -(-n // slab)
    parts = max(1, min(workers or thread_budget(), n_slabs // min_slabs))
    return [round(i * n_slabs / parts) * slab for i in range(parts)] + [n]


def thread_map(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]``, made in up to ``workers`` threads (in this thread when ``workers`` < 2), in the
    items' order."""
    if workers < 2 or len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))
