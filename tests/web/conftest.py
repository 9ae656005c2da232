"""Fixtures of the console tests; the helpers are in console_helpers.py (beside this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # console_helpers (import mode: importlib)

from console_helpers import start_console  # noqa: E402


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    """One node with the console for a test module (tests may change its state: each module has its own)."""
    c = start_console(tmp_path_factory.mktemp("console"))
    yield c
    c.node.stop()
    c.dest.stop()
