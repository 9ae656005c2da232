"""Shared record type for radiomics feature values."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FeatureValue:
    family: str       # exactly as the reference TSV: "morphology", "local intensity", "intensity statistics", "intensity histogram", "intensity-volume histogram", "GLCM", ...
    feature: str      # exactly as the TSV's `feature` column, e.g. "volume (mesh)", "10th percentile"
    aggregation: str  # "" for non-texture families; as the TSV for texture
    value: float
