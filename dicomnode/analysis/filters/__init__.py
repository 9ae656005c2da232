"""IBSI chapter 2 convolutional filters as pure functions over (Z, Y, X) arrays with explicit spacing.

- :mod:`~dicomnode.analysis.filters.spatial`: mean, Laplacian of Gaussian, Laws (rotation invariance, pooling,
  energy), Gabor (rotation invariance, orthogonal planes), undecimated separable wavelets (haar, db2, db3, coif1);
- :mod:`~dicomnode.analysis.filters.fourier`: the Simoncelli non-separable wavelet and Riesz transforms (plain and
  steered by the structure tensor);
- :mod:`~dicomnode.analysis.filters.spec`: :class:`FilterSpec` (one filter, as the radiomics settings' ``[filter]``
  table) and :func:`apply_filter`.

Conventions (IBSI-2 manual, checked against its consensus response maps): the manual's (x, y, z) are our axes
(2, 1, 0); "2D" filters each axial (Y, X) slice; boundaries are named zero, nearest, periodic, mirror (mirror repeats
the edge voxel: scipy.ndimage "reflect"). The older Gaussian-derivative feature maps stay in
``dicomnode.analysis.features.filters``.
"""

from dicomnode.analysis.filters._common import Boundary, Pooling
from dicomnode.analysis.filters.spec import FilterKind, FilterSpec, apply_filter, filter_margin_voxels

__all__ = ["Boundary", "FilterKind", "FilterSpec", "Pooling", "apply_filter", "filter_margin_voxels"]
