"""Job process settings: the glibc allocation policy and pool workers that end with their node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dicomnode.jobs.workerproc import MMAP_THRESHOLD_BYTES, release_free_memory, tune_malloc

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


def _children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if _parent_of(int(d.name)) == pid:
                    out.append(int(d.name))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


def test_tune_malloc_is_accepted_and_idempotent() -> None:
    assert tune_malloc() is True  # glibc (Debian): mallopt accepts both thresholds
    assert tune_malloc() is True
    assert MMAP_THRESHOLD_BYTES == 32 * 2**20


def test_dask_nanny_trim_setting_no_longer_applies_inside_a_job_process(tmp_path) -> None:
    """With MALLOC_TRIM_THRESHOLD_ set (as Dask's nanny does), glibc maps every array over 128 KiB on its own and
    unmaps it on free: freeing 8 MB gives the memory back at once (and the next array is faulted in afresh). Once
    tune_malloc ran, the heap keeps it for the next array."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from dicomnode.jobs.workerproc import tune_malloc
        if sys.argv[1] == "tuned":
            tune_malloc()
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        b = np.ones(2**20); del b  # let the heap grow once
        a = np.ones(2**20)  # 8 MB, touched
        before = rss()
        del a
        print(before - rss())
    """)
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    freed = {mode: int(subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True,
                                      text=True, check=True).stdout) for mode in ("plain", "tuned")}
    assert freed["plain"] >= 7 * 2**20, freed  # unmapped on free
    assert freed["tuned"] < 2**20, freed  # kept by the heap


def test_release_free_memory_returns_what_the_heap_kept() -> None:
    """Under the job policy a freed 16 MB array below a live one stays in the heap (resident); release_free_memory
    gives its pages back to the system, and the live array keeps its values."""
    script = textwrap.dedent("""
        import numpy as np
        from dicomnode.jobs.workerproc import release_free_memory, tune_malloc
        assert tune_malloc()
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        a = np.ones(2 * 2**20)  # 16 MB from the heap, touched
        live = np.full(2**17, 7.0)  # 1 MB after it, kept
        before = rss()
        del a
        kept = before - rss()
        released = release_free_memory()
        print(kept, before - rss(), released, bool((live == 7.0).all()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}).stdout.split()
    kept, freed, released, intact = int(out[0]), int(out[1]), out[2], out[3]
    assert kept < 2**20, out  # the heap kept the pages
    assert freed >= 15 * 2**20 and released == "True", out  # ... until they were released
    assert intact == "True"
    assert release_free_memory() in (True, False)  # callable in this process too (nothing to release is fine)


def test_pool_workers_end_when_the_node_is_killed(tmp_path) -> None:
    """SIGKILL to the node process only (not its group): the pool's workers end, and with them the forkserver."""
    script = textwrap.dedent("""
        import os, sys, time
        from dicomnode.jobs.executors import LocalExecutor
        ex = LocalExecutor(2)
        print(ex._pool.submit(os.getpid).result(), flush=True)
        time.sleep(600)
    """)
    node = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        first = int(node.stdout.readline())
        forkserver = _parent_of(first)
        assert forkserver != node.pid and "forkserver" in Path(f"/proc/{forkserver}/cmdline").read_text()
        workers = _children_of(forkserver)  # every pool worker the forkserver started (one or both by now)
        assert first in workers and all(_alive(p) for p in workers)
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
