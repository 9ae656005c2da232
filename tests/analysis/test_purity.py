"""analysis/ stays pure: no DICOM, network, SQL or file I/O imports (style.md habit 3)."""

import ast
from pathlib import Path

import dicomnode.analysis

FORBIDDEN = {"pydicom", "pynetdicom", "highdicom", "sqlite3", "socket", "requests", "urllib"}
FORBIDDEN_CALLS = {"open"}


def _modules():
    root = Path(dicomnode.analysis.__file__).parent
    return sorted(root.rglob("*.py"))


def test_analysis_imports_no_dicom_network_or_sql():
    offenders = []
    for path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in FORBIDDEN:
                    offenders.append(f"{path.name}:{node.lineno} imports {n}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                offenders.append(f"{path.name}:{node.lineno} calls {node.func.id}()")
    assert not offenders, "\n".join(offenders)
    assert len(_modules()) >= 5
