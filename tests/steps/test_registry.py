"""The step names config validation uses are the registry's, and knowing them imports no model library."""

import subprocess
import sys

from dicomnode.steps import STEP_NAMES, registry


def test_static_step_names_are_the_registry():
    assert STEP_NAMES == frozenset(registry())


def test_loading_the_example_config_imports_no_model_library():
    code = ("import sys; from dicomnode.config import load_config; load_config('conf/dicomnode.toml'); "
            "print(sorted(m for m in ('sklearn', 'skops', 'dicomnode.analysis.classify', 'dicomnode.steps.recognition')"
            " if m in sys.modules))")
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
