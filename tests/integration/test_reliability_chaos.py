"""Crashes during receive, processing and sending, against the real `dicomnode serve` and DCMTK peers.

A small run of :func:`dicomnode.bench.chaos.run_chaos` (``dicomnode bench chaos`` runs the larger one): three
series sent by DCMTK ``storescu`` (resending a whole series when the node went away), one SIGKILL in each phase,
results counted at a DCMTK ``storescp +uf`` destination, where a duplicate is a second file.
"""

from __future__ import annotations

from dicomnode.bench.chaos import run_chaos


def test_kills_lose_nothing_and_deliver_results_once(tmp_path):
    r = run_chaos(tmp_path, series=3, kills=3, slices=8, size=96, pause_s=1.0, drain_timeout_s=400)
    figures = r.as_dict()
    # the phases are tried in turn (receive, process, send); a phase that passes before the bench catches it (a
    # busy CI machine) gives its kill to the next one, so: 3 kills, processing and sending each hit
    assert sum(r.kills.values()) == 3 and r.kills["process"] >= 1 and r.kills["send"] >= 1, figures
    assert r.drained, figures
    # every acknowledged instance is on disk and in the index
    assert r.acknowledged == 3 * 8 and r.present == r.acknowledged and r.indexed == r.acknowledged, figures
    # every series processed once, and a kill is not a failed attempt
    assert r.processed == 3 and r.completed_twice == 0 and r.jobs_failed == 0, figures
    assert r.max_job_attempts == 1, figures
    # results delivered exactly once, up to the instance in flight at the kill during sending
    assert r.results_expected == 3 * 2 and r.delivered == r.results_expected, figures
    assert r.duplicated <= r.kills["send"], figures
