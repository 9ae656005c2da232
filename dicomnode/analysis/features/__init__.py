"""IBSI-1 radiomics features as pure functions over numpy arrays.

Reach the families by module path: ``features.morphology``, ``features.intensity``, ``features.histogram``,
``features.texture``; image processing in ``features.processing``, ``features.discretise`` and
``features.filters``. Every family returns a list of :class:`~dicomnode.analysis.features.base.FeatureValue`.
"""

from dicomnode.analysis.features.base import FeatureValue

__all__ = ["FeatureValue"]
