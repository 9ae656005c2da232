"""Scale-out benchmark: the same series through the chain on the local pool and on a real Dask cluster.

``dicomnode bench scale [--series 16] [--slices 100] [--size 256] [--profile ct] [--transfer shared]``
writes N synthetic CT series (``write_synthetic_ct`` of :mod:`dicomnode.bench.results`, each with its own UIDs
and noise) as DICOM into a temporary folder, then, in one run:

* ``local_1``: :class:`~dicomnode.jobs.executors.LocalExecutor` with 1 process;
* ``local_2``: the same with 2 processes: what this machine gives two jobs side by side without Dask (the
  ceiling for ``dask_2``);
* ``dask_1``: :class:`~dicomnode.jobs.executors.DaskExecutor` on a real ``dask scheduler`` and one
  ``dask worker --nworkers 1 --nthreads 1`` (subprocesses on free loopback ports);
* ``dask_2``: the same with a second worker.

Before each timed round every worker runs one series untimed (imports and first-call costs are paid by any
long-running worker once, not per job). A round submits all N series at once and ends when the last is done.
Workers run with ``OMP_NUM_THREADS=1`` etc. (one core per worker). Prints one JSON object: per round the wall time,
series per minute, the mean job time (``JobOutcome.seconds``, measured inside the chain) and the CPU seconds used by
this process, the scheduler, the nannies and the workers; the scaling of 2 Dask workers over 1 (target >= 1.8)
beside that of 2 local processes over 1, and the Dask executor's overhead per job against the local pool (target
<= 5% of the job time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path
from typing import Any, Sequence

from dicomnode.bench._common import free_port

__all__ = ["main"]

_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "NUMEXPR_NUM_THREADS": "1",
               # Dask's statistical profiler samples every worker thread's stack every 10 ms, holding the GIL:
               # the dicomnode worker set-up in docs/scaling.md turns it off, and so does the bench
               "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}


def _dask_cli() -> list[str]:
    exe = Path(sys.executable).with_name("dask")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "distributed.cli.dask_spec"]


class _Cluster:
    """``dask scheduler`` and ``dask worker`` subprocesses on loopback; :meth:`close` ends them all."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, **_ONE_THREAD}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._start([*_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                     "--dashboard-address", ":0"], "scheduler")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"dask scheduler did not listen on {self.port}: see {work / 'scheduler.log'}")

    def _start(self, cmd: list[str], name: str) -> None:
        log = open(self.work / f"{name}.log", "ab")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))

    def add_worker(self, client: Any, n_expected: int) -> None:
        self._start([*_dask_cli(), "worker", self.address, "--nworkers", "1", "--nthreads", "1",
                     "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{n_expected}"],
                    f"worker{n_expected}")
        client.wait_for_workers(n_expected, timeout=120)

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def _cpu_seconds(cluster: "_Cluster | None") -> dict[str, float]:
    """CPU seconds used so far by this process (the node's side: client, executor) and, on a cluster, by the
    scheduler, the nannies (the ``dask worker`` processes) and the workers they started."""
    import psutil

    def cpu(p: Any) -> float:
        try:
            t = p.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    me = psutil.Process()
    out = {"node": cpu(me)}
    if cluster is None:
        out["workers"] = sum(cpu(c) for c in me.children(recursive=True))
        return out
    procs = [psutil.Process(p.pid) for p in cluster.procs]
    out["scheduler"] = cpu(procs[0])
    out["nannies"] = sum(cpu(p) for p in procs[1:])
    out["workers"] = sum(cpu(c) for p in procs[1:] for c in p.children(recursive=True))
    return out


def _round(executor: Any, series: Sequence[list[str]], profile: Any, out: Path, name: str,
           warm: Sequence[list[str]], cluster: "_Cluster | None" = None) -> dict[str, Any]:
    from dicomnode.jobs.spec import ChainSpec

    def spec(files: list[str], i: int, tag: str) -> ChainSpec:
        return ChainSpec(files=tuple(files), profile=profile, out_dir=str(out / name / f"{tag}{i:03d}"),
                         uid_root="2.25.", job_id=i)

    for f in [executor.submit(spec(w, i, "warm")) for i, w in enumerate(warm)]:
        f.result()
    cpu0 = _cpu_seconds(cluster)
    t0 = time.perf_counter()
    futs = [executor.submit(spec(s, i, "s")) for i, s in enumerate(series)]
    wait(futs)
    wall = time.perf_counter() - t0
    cpu1 = _cpu_seconds(cluster)
    outcomes = [f.result() for f in futs]
    job_s = [o.seconds for o in outcomes]
    return {"wall_s": round(wall, 2), "series_per_min": round(60 * len(series) / wall, 2),
            "mean_job_s": round(sum(job_s) / len(job_s), 3), "wall_per_series_s": round(wall / len(series), 3),
            # where the machine's CPU went during the round (seconds; workers = the processes running the jobs)
            "cpu_s": {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from distributed import Client

    from dicomnode.bench.results import write_synthetic_ct
    from dicomnode.config import load_config
    from dicomnode.jobs.executors import DaskExecutor, LocalExecutor

    os.environ.update(_ONE_THREAD)  # the local pool's processes inherit it
    cfg = load_config(args.config)
    profile = cfg.profiles[args.profile]
    data = work / "series"
    series, warm = [], []
    t = time.perf_counter()
    for i in range(args.series + 2):
        folder = data / f"{i:03d}"
        folder.mkdir(parents=True)
        files = [str(p) for p in write_synthetic_ct(folder, n_slices=args.slices, rows=args.size,
                                                    columns=args.size, spacing_mm=(2.5, 1.5, 1.5), seed=i)]
        (warm if i >= args.series else series).append(files)
    gen_s = time.perf_counter() - t
    out = work / "out"
    rounds: dict[str, Any] = {}

    for n in (1, 2):  # local_2: what two processes side by side get from this machine, without Dask
        local = LocalExecutor(n)
        try:
            rounds[f"local_{n}"] = _round(local, series, profile, out, f"local_{n}", warm[:n])
        finally:
            local.shutdown(wait=True)

    cluster = _Cluster(work)
    try:
        probe = Client(cluster.address, timeout=30, set_as_default=False)
        try:
            cluster.add_worker(probe, 1)
            ex = DaskExecutor(1, cluster.address, transfer=args.transfer)
            rounds["dask_1"] = _round(ex, series, profile, out, "dask_1", warm[:1], cluster)
            cluster.add_worker(probe, 2)
            ex._threads_checked = 0.0  # see the new worker now, not in 5 s
            rounds["dask_2"] = _round(ex, series, profile, out, "dask_2", warm[:2], cluster)
            ex.shutdown(wait=True)
        finally:
            probe.close()
    finally:
        cluster.close()

    l1, l2, d1, d2 = rounds["local_1"], rounds["local_2"], rounds["dask_1"], rounds["dask_2"]
    scaling = d1["wall_s"] / d2["wall_s"]
    local_scaling = l1["wall_s"] / l2["wall_s"]
    overhead_s = d1["wall_per_series_s"] - l1["wall_per_series_s"]
    return {
        "bench": "scale",
        "series": args.series, "shape": [args.slices, args.size, args.size], "profile": args.profile,
        "transfer": args.transfer, "generate_s": round(gen_s, 2),
        "rounds": rounds,
        "scaling_2_vs_1": round(scaling, 3),
        "scaling_efficiency": round(scaling / 2, 3),
        "scaling_target": 1.8,
        "scaling_met": scaling >= 1.8,
        # the same two processes without Dask: the machine's own ceiling (shared L3 cache and memory bandwidth)
        "local_scaling_2_vs_1": round(local_scaling, 3),
        "job_slowdown_2_workers": round(d2["mean_job_s"] / d1["mean_job_s"], 3),
        "job_slowdown_2_local": round(l2["mean_job_s"] / l1["mean_job_s"], 3),
        "dask_overhead_per_job_s": round(overhead_s, 3),
        "dask_overhead_pct_of_job": round(100 * overhead_s / l1["wall_per_series_s"], 2),
        "overhead_target_pct": 5.0,
        "overhead_met": overhead_s <= 0.05 * l1["wall_per_series_s"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "notes": "warm workers (one untimed series each first); 1 thread per worker; node, scheduler and workers "
                 "share the machine's cores",
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dicomnode bench scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int, default=16, help="timed series per round (default 16)")
    p.add_argument("--slices", type=int, default=100)
    p.add_argument("--size", type=int, default=256, help="rows = columns (default 256)")
    p.add_argument("--profile", default="ct", help="analysis profile (default ct)")
    p.add_argument("--transfer", choices=["shared", "bytes"], default="shared")
    p.add_argument("--config", "-c", help="config file with the profile (default: the embedded defaults)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, outputs)")
    args = p.parse_args(list(argv or []))
    # "one worker" is one core in every round: the local pool's worker gets the same single thread as a Dask
    # worker (started with OMP_NUM_THREADS=1), so the rounds compare executors, not thread counts
    os.environ.setdefault("DICOMNODE_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="dicomnode-bench-scale-"))
    try:
        print(json.dumps(run(args, work), indent=2))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
