"""Job process settings: the glibc allocation policy and pool workers that end with their node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dicomnode.workerproc import MMAP_THRESHOLD_BYTES, tune_malloc

from helpers import wait_until


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_tune_malloc_is_accepted_and_idempotent() -> None:
    assert tune_malloc() is True  # glibc (Debian): mallopt accepts both thresholds
    assert tune_malloc() is True
    assert MMAP_THRESHOLD_BYTES == 32 * 2**20


def test_dask_nanny_trim_setting_no_longer_applies_inside_a_job_process(tmp_path) -> None:
    """With MALLOC_TRIM_THRESHOLD_ set (as Dask's nanny does), a freed 8 MB array comes back from the heap once
    tune_malloc ran: glibc serves it without a fresh mmap, which the kernel counts as no new minor page faults."""
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from dicomnode.workerproc import tune_malloc
        if sys.argv[1] == "tuned":
            tune_malloc()
        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones(2**20); del a  # 8 MB, touched
        before = faults()
        for _ in range(20):
            a = np.ones(2**20); del a
        print(faults() - before)
    """)
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = {mode: int(subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True,
                                    text=True, check=True).stdout) for mode in ("plain", "tuned")}
    # plain: every round maps the array afresh and faults it in again (numpy asks for huge pages, so ~500 faults
    # per round here rather than 2048); tuned: the heap serves it, already mapped
    assert out["plain"] >= 20 * 100
    assert out["tuned"] < 100


def test_pool_workers_end_when_the_node_is_killed(tmp_path) -> None:
    """SIGKILL to the node process only (not its group): the pool's workers end, and with them the forkserver."""
    script = textwrap.dedent("""
        import os, sys, time
        from dicomnode.executors import LocalExecutor
        ex = LocalExecutor(2)
        for f in [ex._pool.submit(time.sleep, 0.5) for _ in range(2)]:  # both workers started
            f.result()
        pids = {ex._pool.submit(os.getpid).result() for _ in range(8)}
        print(" ".join(map(str, sorted(pids))), flush=True)
        time.sleep(600)
    """)
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = node.stdout.readline()
        workers = [int(p) for p in line.split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        forkserver = _parent_of(workers[0])
        assert forkserver != node.pid and "forkserver" in Path(f"/proc/{forkserver}/cmdline").read_text()
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        wait_until(lambda: not any(_alive(p) for p in [*workers, forkserver]), timeout_s=20,
                   what=f"pool workers {workers} and forkserver {forkserver} to end with their node")
    finally:
        try:
            os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.1)
