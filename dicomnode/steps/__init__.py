"""The registry of profile steps.

Pure steps live in :mod:`dicomnode.analysis.steps`; steps that need more than arrays (a trained model file, for
instance) live in modules of this package, which register themselves with
:func:`dicomnode.analysis.pipeline.step` when imported. :func:`registry` imports them all.
"""

from __future__ import annotations

import importlib
import pkgutil

from dicomnode.analysis.pipeline import STEPS, StepFn

_loaded = False


def registry() -> dict[str, StepFn]:
    """Every registered step by name (importing the step modules on first use)."""
    global _loaded
    if not _loaded:
        importlib.import_module("dicomnode.analysis.steps")
        for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if not m.name.startswith("_"):
                importlib.import_module(f"{__name__}.{m.name}")
        _loaded = True
    return STEPS


#: The names :func:`registry` registers, known without importing the step modules, so that loading a configuration
#: (``config check``, ``status``) does not import scikit-learn and the analysis; a test checks it against the registry.
STEP_NAMES = frozenset({"classify", "correct", "denoise", "detect", "enhance", "features", "foreground", "match",
                        "measure", "scene", "segment", "synthesize"})


def step_names() -> frozenset[str]:
    """The step names a profile may use (without importing the steps)."""
    return STEP_NAMES
