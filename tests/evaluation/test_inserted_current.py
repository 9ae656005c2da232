"""inserted: the shipped table of inserted-lesion PET candidates was made by the analysis code of this commit.

The PET map of the shipped findings calibration is fitted on that table (docs/models.md). A change under
dicomnode/analysis/ or dicomnode/steps/ may change the node's candidates and their scores; a table made by older code
would then fit the map to candidates the node no longer makes. This test keeps the two in step: it fails until the
table is regenerated (and the calibration refitted) with the change.
"""

from __future__ import annotations

from dicomnode.evaluation.inserted import DEFAULT_TABLE, is_current, read_table


def test_the_shipped_table_was_made_by_this_analysis_code():
    table = read_table(DEFAULT_TABLE)
    assert is_current(table), (
        f"{DEFAULT_TABLE} was made by other analysis code (its 'code' hash {table.code} differs): after a change "
        "under dicomnode/analysis/ or dicomnode/steps/, run python3 -m dicomnode.evaluation.inserted, then "
        "python3 scripts/evaluate_findings.py --write-model --cache DIR, and commit both")
