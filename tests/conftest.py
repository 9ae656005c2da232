import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import json  # noqa: E402

from dicomnode.analysis.threads import pin_blas_threads  # noqa: E402

pin_blas_threads()  # as every node process and command: one BLAS thread, so a test sees the values a job makes

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _results_json_follow_the_schema(request):
    """Every results.json a test makes (under its tmp_path) is valid against the shipped JSON Schema."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    tmp = request.getfixturevalue("tmp_path")  # requested here, it is torn down after this fixture
    yield
    import jsonschema

    from dicomnode.schemas import results_schema
    found = [p for p in tmp.rglob("results.json") if p.is_file()]
    if not found:
        return
    validator = jsonschema.Draft202012Validator(results_schema())
    for path in found:
        errors = sorted(validator.iter_errors(json.loads(path.read_text())), key=lambda e: list(e.path))
        assert not errors, f"{path} does not follow dicomnode/schemas/results.schema.json: " + "; ".join(
            f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors[:5])
