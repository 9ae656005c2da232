"""Block pooling on a coarser grid: the mean of each block of voxels, and a mask sampled at block centres.

Used wherever an analysis step works on a coarser grid than the image's (the findings search, the limb-mass search,
the scene's slice descriptors). A block is ``factors`` voxels along each axis; the last ``n % f`` voxels of an axis
(less than one block) are left out, so the coarse voxel ``i`` covers fine voxels ``[i * f, (i + 1) * f)``.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

__all__ = ["block_mean", "block_centres"]


def block_mean(image: np.ndarray, factors: Sequence[int], *, partial: str = "drop") -> np.ndarray:
    """Mean over blocks of ``factors`` voxels (any number of axes), as float32.

    Sums shifted strided views, so no padded or reshaped copy of the full array is made. ``partial``: what becomes
    of the voxels a whole number of blocks leaves over at the far end of an axis: ``"drop"`` (the grid has
    ``n // k`` blocks) or ``"zeros"`` (``ceil(n / k)`` blocks, the last one's missing voxels counted as 0: the
    block grid of a filter with ``mode="constant"``).

    Examples
    --------
    >>> block_mean(np.arange(8, dtype=np.float32).reshape(2, 4), (2, 2)).tolist()
    [[2.5, 4.5]]
    >>> block_mean(np.arange(3, dtype=np.float32), (2,), partial="zeros").tolist()
    [0.5, 1.0]
    """
    f = tuple(int(k) for k in factors)
    if len(f) != image.ndim or min(f) < 1:
        raise ValueError(f"block factors {f} do not fit an array of {image.ndim} axes: give one integer >= 1 per axis")
    if partial not in ("drop", "zeros"):
        raise ValueError(f"partial must be 'drop' or 'zeros', got {partial!r}")
    if all(k == 1 for k in f):
        return image.astype(np.float32, copy=True)
    if partial == "zeros":
        shape = tuple(-(-n // k) for n, k in zip(image.shape, f))
        out = np.zeros(shape, dtype=np.float32)
        for offsets in itertools.product(*(range(k) for k in f)):
            part = image[tuple(slice(o, None, k) for o, k in zip(offsets, f))]
            out[tuple(slice(0, n) for n in part.shape)] += part
        out /= float(np.prod(f))
        return out
    shape = tuple(n // k for n, k in zip(image.shape, f))
    out = np.zeros(shape, dtype=np.float32)
    if 0 in shape:
        return out
    a = image[tuple(slice(0, n * k) for n, k in zip(shape, f))]
    for offsets in itertools.product(*(range(k) for k in f)):
        out += a[tuple(slice(o, None, k) for o, k in zip(offsets, f))]
    out /= float(np.prod(f))
    return out


def block_centres(mask: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """The mask at each block's centre voxel (nearest-neighbour subsampling on the grid of :func:`block_mean`)."""
    f = tuple(int(k) for k in factors)
    shape = tuple(n // k for n, k in zip(mask.shape, f))
    sub = mask[tuple(slice(k // 2, None, k) for k in f)]
    return np.ascontiguousarray(sub[tuple(slice(0, n) for n in shape)])
