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

__all__ = ["MIN_PARALLEL_VOXELS", "gaussian_filter", "slab_runs", "thread_budget", "thread_map"]

T = TypeVar("T")
R = TypeVar("R")


def thread_budget(cap: int = 8) -> int:
    """``DICOMNODE_THREADS``, else ``OMP_NUM_THREADS``, else the number of cores (at most ``cap``); at least 1."""
    for name in ("DICOMNODE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, min(os.cpu_count() or 1, cap))


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
