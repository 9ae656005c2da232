"""A series the chain must refuse (a GE 3-plane localizer) fails its job at once with the reason, without retries."""

from __future__ import annotations

import json
import time

from helpers import SHARED_DATA, storescu, wait_until

LOCALIZER = SHARED_DATA / "mr-localizer" / "LOC"


def test_localizer_job_fails_once_with_the_reason_and_is_not_retried(make_node):
    node = make_node({"workers": {"count": 1, "retry_backoff_seconds": [0.5], "max_attempts": 3}})
    assert storescu(node.port, [LOCALIZER]).returncode == 0  # GE file names without an extension
    st = wait_until(lambda: (s := node.status())["jobs"]["counts"].get("failed") == 1 and s, timeout_s=90,
                    what="the localizer's job to fail")
    job_id = st["failed_jobs"][0]
    shown = json.loads(node.cli("jobs", "show", str(job_id)).stdout)
    assert shown["state"] == "failed" and shown["attempts"] == 1
    assert "SeriesRefusedError" in shown["error"]
    assert "3 image orientations in one series" in shown["error"] and "localizer" in shown["error"]
    time.sleep(2.0)  # four backoff periods: a retryable failure would have run again by now
    again = json.loads(node.cli("jobs", "show", str(job_id)).stdout)
    assert again["state"] == "failed" and again["attempts"] == 1 and again["finished_at"] == shown["finished_at"]
    assert node.status()["jobs"]["counts"].get("done", 0) == 0
