"""Shared pieces of the IBSI-2 filters: boundary conditions, pooling, right-angle rotations, FFT helpers.

Axis convention: arrays are (Z, Y, X) as everywhere in dicomnode; the IBSI manual's (x, y, z) are our axes
(2, 1, 0). Letters of Laws kernels and wavelet maps, and Riesz orders, are given in the manual's (x, y, z) order.
"""

from __future__ import annotations

import itertools
import math
from enum import Enum

import numpy as np
import scipy.fft

from dicomnode.analysis.threads import thread_budget

__all__ = ["Boundary", "Pooling", "pool", "rotations"]


class Boundary(str, Enum):
    """IBSI-2 boundary conditions (how the image is extended beyond its edge)."""

    ZERO = "zero"
    NEAREST = "nearest"
    PERIODIC = "periodic"
    MIRROR = "mirror"  # the edge voxel repeated: scipy.ndimage "reflect", numpy.pad "symmetric"

    @classmethod
    def parse(cls, name: "str | Boundary") -> "Boundary":
        """The boundary named `name`; "constant" is accepted for "zero"."""
        if isinstance(name, Boundary):
            return name
        key = str(name).strip().lower()
        if key == "constant":
            return cls.ZERO
        try:
            return cls(key)
        except ValueError:
            raise ValueError(
                f"boundary must be one of {[b.value for b in cls]}, got {name!r}"
            ) from None

    @property
    def ndimage_mode(self) -> str:
        return {"zero": "constant", "nearest": "nearest", "periodic": "wrap", "mirror": "reflect"}[self.value]

    @property
    def pad_mode(self) -> str:
        return {"zero": "constant", "nearest": "edge", "periodic": "wrap", "mirror": "symmetric"}[self.value]


class Pooling(str, Enum):
    """How the responses to rotated filters are combined (IBSI-2 rotation invariance)."""

    MAX = "max"
    AVERAGE = "average"
    MIN = "min"

    @classmethod
    def parse(cls, name: "str | Pooling") -> "Pooling":
        if isinstance(name, Pooling):
            return name
        key = str(name).strip().lower()
        if key == "mean":
            return cls.AVERAGE
        try:
            return cls(key)
        except ValueError:
            raise ValueError(f"pooling must be one of {[p.value for p in cls]}, got {name!r}") from None


class _Pool:
    """Running pool of response maps: add one at a time, so only two full-size arrays live at once."""

    def __init__(self, pooling: Pooling) -> None:
        self.pooling = pooling
        self.value: np.ndarray | None = None
        self.count = 0

    def add(self, response: np.ndarray) -> None:
        if self.value is None:
            self.value = np.array(response, dtype=np.float64 if response.dtype == np.float64 else np.float32)
        elif self.pooling is Pooling.MAX:
            np.maximum(self.value, response, out=self.value)
        elif self.pooling is Pooling.MIN:
            np.minimum(self.value, response, out=self.value)
        else:
            self.value += response
        self.count += 1

    def result(self) -> np.ndarray:
        assert self.value is not None
        if self.pooling is Pooling.AVERAGE:
            self.value /= self.count
        return self.value


def pool(responses, pooling: Pooling) -> np.ndarray:
    """Pool an iterable of equally shaped response maps voxel by voxel (max, average or min)."""
    acc = _Pool(Pooling.parse(pooling))
    for r in responses:
        acc.add(r)
    if acc.count == 0:
        raise ValueError("no responses to pool")
    return acc.result()


def rotations(ndim: int) -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
    """The right-angle rotations of an `ndim`-D grid (4 in 2-D, 24 in 3-D) as (axis permutation, flips).

    Rotation ``(perm, flips)`` of an array ``a`` is ``np.transpose(a, perm)`` then reversing every axis ``i`` with
    ``flips[i]``; only proper rotations (determinant +1) are listed, the identity first.
    """
    out = []
    for perm in itertools.permutations(range(ndim)):
        parity = _permutation_sign(perm)
        for flips in itertools.product((False, True), repeat=ndim):
            sign = parity * (-1) ** sum(flips)
            if sign == 1:
                out.append((perm, flips))
    out.sort(key=lambda r: (r[0] != tuple(range(ndim)) or any(r[1]), r))
    return out


def _permutation_sign(perm: tuple[int, ...]) -> int:
    sign, seen = 1, list(perm)
    for i in range(len(seen)):
        while seen[i] != i:
            j = seen[i]
            seen[i], seen[j] = seen[j], seen[i]
            sign = -sign
    return sign


def pad(image: np.ndarray, widths, boundary: Boundary) -> np.ndarray:
    """Extend `image` by ``widths`` (per axis, int or (before, after)) with the IBSI boundary condition."""
    return np.pad(image, widths, mode=boundary.pad_mode)


def fft_workers() -> int:
    return thread_budget()


def fftn(a: np.ndarray, axes) -> np.ndarray:
    return scipy.fft.fftn(a, axes=axes, workers=fft_workers())


def ifftn(a: np.ndarray, axes) -> np.ndarray:
    return scipy.fft.ifftn(a, axes=axes, workers=fft_workers())


def frequency_grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Angular frequencies in [-pi, pi) per axis, broadcastable (sparse) as for an `fftn` of that shape."""
    grids = []
    for ax, n in enumerate(shape):
        w = 2.0 * math.pi * scipy.fft.fftfreq(n)
        sh = [1] * len(shape)
        sh[ax] = n
        grids.append(w.reshape(sh))
    return grids
