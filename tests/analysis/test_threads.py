"""analysis/threads.py: the thread budget threaded filters and FFTs respect."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dicomnode.analysis.threads import thread_budget


def test_budget_follows_the_worker_settings(monkeypatch) -> None:
    monkeypatch.setenv("DICOMNODE_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert thread_budget() == 1  # the pool's per-worker share wins
    monkeypatch.delenv("DICOMNODE_THREADS")
    assert thread_budget() == 4  # a Dask worker started with OMP_NUM_THREADS
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    monkeypatch.setenv("DICOMNODE_THREADS", "")
    assert thread_budget() == max(1, min(os.cpu_count() or 1, 8))  # a lone process: every core, up to 8
    assert thread_budget(cap=1) == 1


def test_moran_fft_stays_on_one_thread_in_a_one_core_worker(monkeypatch) -> None:
    """With a budget of 1 the FFTs of Moran's I run on the calling thread only (no helper threads' CPU time)."""
    import threading
    import time

    import numpy as np

    from dicomnode.analysis.features.morphology import moran_geary

    monkeypatch.setenv("DICOMNODE_THREADS", "1")
    rng = np.random.default_rng(0)
    mask = rng.random((40, 90, 110)) < 0.02
    x = rng.normal(size=mask.shape)
    before_threads = threading.active_count()
    t_cpu, t_thread = time.process_time(), time.thread_time()
    moran_geary(x, mask, (2.5, 0.9, 0.8))
    process_cpu, thread_cpu = time.process_time() - t_cpu, time.thread_time() - t_thread
    assert threading.active_count() == before_threads
    # FFTs split over two threads would give the other threads about as much CPU as this one (ratio ~1); a test
    # process also has threads of its own (pytest-xdist's channel, BLAS) that take a few tens of ms on a busy
    # machine (0.04 s against 0.14 s once in CI): the bound sits between the two
    assert process_cpu - thread_cpu < 0.5 * thread_cpu + 0.02, (process_cpu, thread_cpu)


@pytest.mark.parametrize("mode", ["constant", "nearest", "reflect"])
@pytest.mark.parametrize("workers", [2, 3])
def test_threaded_gaussian_is_scipys_bit_for_bit(mode, workers):
    """Each 1-D pass split into blocks along another axis: every value as scipy's one call gives, in place, into a
    given array or a dtype, with an axis left unfiltered (sigma 0)."""
    import scipy.ndimage as ndi

    from dicomnode.analysis.threads import gaussian_filter

    rng = np.random.default_rng(7)
    img = rng.normal(size=(37, 130, 251)).astype(np.float32)  # > MIN_PARALLEL_VOXELS, odd sizes
    for sigma in ((2.0, 3.5, 1.2), (0.0, 4.0, 4.0), 2.5):
        want = ndi.gaussian_filter(img, sigma, mode=mode, output=np.float32, truncate=3.0)
        got = gaussian_filter(img, sigma, mode=mode, output=np.float32, truncate=3.0, workers=workers)
        assert got.dtype == np.float32 and np.array_equal(got, want)
        into = np.empty_like(img)
        assert gaussian_filter(img, sigma, mode=mode, output=into, truncate=3.0, workers=workers) is into
        assert np.array_equal(into, want)
        inplace = img.copy()
        gaussian_filter(inplace, sigma, mode=mode, output=inplace, truncate=3.0, workers=workers)
        assert np.array_equal(inplace, want)
    as64 = gaussian_filter(img, 2.0, mode=mode, output=np.float64, workers=workers)
    assert as64.dtype == np.float64 and np.array_equal(as64, ndi.gaussian_filter(img, 2.0, mode=mode,
                                                                                 output=np.float64))


def test_slab_runs_and_thread_map():
    """Runs of whole slabs, at least four slabs each, one per thread at most; a map in threads keeps the order."""
    from dicomnode.analysis.threads import slab_runs, thread_map

    assert slab_runs(25, 8, 2) == [0, 25]  # 4 slabs: one run
    assert slab_runs(64, 8, 2) == [0, 32, 64]
    assert slab_runs(97, 8, 3) == [0, 32, 72, 97]  # 13 slabs: 4, 5, 4
    assert slab_runs(130, 8, 1) == [0, 130]
    assert all(c % 8 == 0 for c in slab_runs(1000, 8, 7)[:-1])
    assert thread_map(lambda x: x * x, range(50), 3) == [x * x for x in range(50)]
    assert thread_map(lambda x: x + 1, [1], 4) == [2]


_BLAS_PROBE = r"""
import json, sys
import numpy as np
if sys.argv[1] == "pin":
    from dicomnode.analysis.threads import pin_blas_threads
    assert pin_blas_threads()
import scipy.linalg  # loads scipy's own OpenBLAS after the pin
from threadpoolctl import threadpool_info
x = np.random.default_rng(7).standard_normal(3_000_001)
print(json.dumps({"dot": float(np.dot(x, x)).hex(), "sd": float(x.std()).hex(),
                  "threads": [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]}))
"""


def test_pinned_blas_gives_a_one_thread_process_s_values():
    """pin_blas_threads: every BLAS of the process (numpy's, and scipy's loaded after the pin) on one thread, and a
    long dot product and SD bit for bit as in a process started with one BLAS thread (a Dask worker started with
    OMP_NUM_THREADS=1), whatever the machine's cores."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")}

    def probe(mode: str, extra: dict) -> dict:
        out = subprocess.run([sys.executable, "-c", _BLAS_PROBE, mode], env={**env, **extra}, capture_output=True,
                             text=True, timeout=120, check=True).stdout
        return json.loads(out)

    pinned = probe("pin", {})
    single = probe("plain", {"OPENBLAS_NUM_THREADS": "1"})
    assert pinned["threads"] and all(n == 1 for n in pinned["threads"]), pinned
    assert len(pinned["threads"]) == len(single["threads"])
    assert (pinned["dot"], pinned["sd"]) == (single["dot"], single["sd"])
