"""C-STORE ingest benchmark: the node against DCMTK ``storescp`` and Orthanc, over loopback.

``dicomnode bench ingest [--rounds 5] [--slices 300]`` generates an N-slice 512x512 int16 CT (explicit
VR little endian) and sends it with ``TCP_NODELAY=1 /usr/bin/storescu -aet BENCH -aec <AET> +sd
127.0.0.1 PORT DIR`` to each receiver, in rotating order over the rounds, in one run:

* ``node``: the real product, ``python -m dicomnode serve --config CFG`` (``--receiver serve``), or
  the StorageSCP alone, ``python -m dicomnode.net.scp`` (``--receiver scp``; ``scp-stock`` for
  pynetdicom's stock receive path);
* ``storescp``: DCMTK ``storescp +B --max-pdu 131072`` (env ``TCP_NODELAY=1``), no fsync;
* ``orthanc``: Debian's ``Orthanc`` with ``SyncStorageArea: true`` (env ``TCP_NODELAY=1``).

Every copy of the series sent gets fresh Study/Series/SOP Instance UIDs, so no receiver can skip a
duplicate. The same is then done with 4 ``storescu`` in parallel, each sending a quarter of the series.
Prints one JSON object: per receiver the median seconds, MB/s and all round times, the node's
throughput ratio to each other receiver, and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dicomnode.bench._common import SyntheticCT, env_nodelay, free_port, wait_for_port

__all__ = ["main"]

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ORTHANC_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
NODE_AET = "DICOMNODE"


# -- the test series --------------------------------------------------------------------------------------------


class SeriesWriter(SyntheticCT):
    """Copies of one synthetic 512x512 CT series (see :class:`SyntheticCT`), each with fresh UIDs."""

    def __init__(self, slices: int, rng: np.random.Generator) -> None:
        super().__init__(slices, rng, size=512, fov_mm=409.6, thickness_mm=1.5, name="Ingest")

    def write(self, folder: Path, *, parts: int = 1) -> list[Path]:  # type: ignore[override]
        """Write one copy with fresh UIDs into `folder` (or `parts` sub-folders); return the folders."""
        return super().write(folder, parts=parts)[2]


# -- receivers --------------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A running receiver process and how to address it."""

    name: str
    aet: str
    port: int
    proc: subprocess.Popen[bytes]
    out_dir: Path
    log_path: Path
    extra_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for proc in [self.proc, *self.extra_procs]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [self.proc, *self.extra_procs]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _start(name: str, cmd: list[str], port: int, aet: str, out_dir: Path, work: Path,
           env: dict[str, str] | None = None) -> Receiver:
    log_path = work / f"{name}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env or env_nodelay(),
                                start_new_session=True)
    receiver = Receiver(name, aet, port, proc, out_dir, log_path)
    try:
        wait_for_port(port, proc)
    except BaseException:
        receiver.stop()
        raise
    return receiver


def start_node(work: Path, mode: str) -> Receiver:
    """Start the node (``serve``) or its StorageSCP alone (``scp`` / ``scp-stock``) on a free port."""
    port = free_port()
    data_dir = work / "node-data"
    data_dir.mkdir()
    if mode == "serve":
        cfg = work / "node.toml"
        cfg.write_text(
            f'[node]\nae_title = "{NODE_AET}"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir}"\n\n'
            "[series]\nquiet_seconds = 3600\n"
        )
        cmd = [sys.executable, "-m", "dicomnode", "serve", "--config", str(cfg)]
    else:
        cmd = [sys.executable, "-m", "dicomnode.net.scp", "--port", str(port), "--data-dir", str(data_dir),
               "--ae-title", NODE_AET]
        if mode == "scp-stock":
            cmd.append("--stock")
    return _start("node", cmd, port, NODE_AET, data_dir / "instances", work)


def start_storescp(work: Path) -> Receiver:
    """DCMTK storescp, bit-preserving, 128 KiB PDU, TCP_NODELAY=1."""
    port = free_port()
    out = work / "storescp-data"
    out.mkdir()
    cmd = [STORESCP, "+B", "--max-pdu", "131072", "-aet", "STORESCP", "-od", str(out), str(port)]
    return _start("storescp", cmd, port, "STORESCP", out, work)


def start_orthanc(work: Path) -> Receiver:
    """Debian's Orthanc with its own storage/index folders, synchronous storage, any AET, TCP_NODELAY=1."""
    exe = next((p for p in ORTHANC_CANDIDATES if Path(p).exists()), None)
    if exe is None:
        raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc)")
    port, http_port = free_port(), free_port()
    root = work / "orthanc"
    (root / "storage").mkdir(parents=True)
    (root / "index").mkdir()
    config = {
        "Name": "bench",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "StorageCompression": False,
        "SyncStorageArea": True,
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "StableAge": 3600,
    }
    cfg = root / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    return _start("orthanc", [exe, str(cfg)], port, "ORTHANC", root / "storage", work)


# -- sending ----------------------------------------------------------------------------------------------------


def send(receiver: Receiver, folders: Sequence[Path]) -> float:
    """Send each folder with its own storescu, all at once; return the wall time in seconds."""
    env = env_nodelay()
    start = time.perf_counter()
    procs = [
        subprocess.Popen([STORESCU, "-aet", "BENCH", "-aec", receiver.aet, "+sd", "127.0.0.1", str(receiver.port),
                          str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        for folder in folders
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    seconds = time.perf_counter() - start
    for proc, out in zip(procs, outputs):
        if proc.returncode != 0:
            raise RuntimeError(f"storescu to {receiver.name} failed ({proc.returncode}): {out.decode()[-2000:]}")
    return seconds


def _count_dcm(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*") if _.is_file() and not _.name.startswith("."))


def _summary(times: list[float], total_bytes: int) -> dict[str, object]:
    median = statistics.median(times)
    return {"median_s": round(median, 4), "mb_per_s": round(total_bytes / 1e6 / median, 1),
            "rounds_s": [round(t, 4) for t in times]}


def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Start the receivers, run the rounds and return the JSON-ready results."""
    rng = np.random.default_rng(args.seed)
    writer = SeriesWriter(args.slices, rng)
    mode = args.receiver
    if mode == "auto":
        mode = "serve" if _has_serve() else "scp"
    starters = {"node": lambda: start_node(work, mode), "storescp": lambda: start_storescp(work),
                "orthanc": lambda: start_orthanc(work)}
    names = [n for n in ("node", "storescp", "orthanc") if n in args.receivers]
    receivers: dict[str, Receiver] = {}
    single: dict[str, list[float]] = {n: [] for n in names}
    parallel: dict[str, list[float]] = {n: [] for n in names}
    total_bytes = 0
    try:
        for n in names:
            receivers[n] = starters[n]()
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            copies: dict[tuple[str, int], list[Path]] = {}
            for n in order:
                copies[(n, 1)] = writer.write(work / "send" / f"r{r}-{n}-1")
                if args.parallel > 1:
                    copies[(n, args.parallel)] = writer.write(work / "send" / f"r{r}-{n}-p", parts=args.parallel)
            os.sync()  # the copies' dirty pages must not land in the receivers' fsyncs
            total_bytes = sum(f.stat().st_size for f in copies[(order[0], 1)][0].iterdir())
            for n in order:
                single[n].append(send(receivers[n], copies[(n, 1)]))
            if args.parallel > 1:
                for n in order:
                    parallel[n].append(send(receivers[n], copies[(n, args.parallel)]))
            shutil.rmtree(work / "send")
            os.sync()
        time.sleep(0.5)
        expected = args.rounds * args.slices * (2 if args.parallel > 1 else 1)
        stored = {n: _count_dcm(receivers[n].out_dir) for n in names if n != "orthanc"}
    finally:
        for rec in receivers.values():
            rec.stop()

    result: dict[str, object] = {
        "settings": {
            "slices": args.slices, "rounds": args.rounds, "rows": 512, "columns": 512, "bits": 16,
            "series_mb": round(total_bytes / 1e6, 1), "parallel": args.parallel, "node_receiver": mode,
            "sender": "TCP_NODELAY=1 /usr/bin/storescu -aet BENCH -aec <AET> +sd 127.0.0.1 PORT DIR",
            "storescp": "TCP_NODELAY=1 storescp +B --max-pdu 131072 (no fsync)",
            "orthanc": "TCP_NODELAY=1 Orthanc, SyncStorageArea true, SQLite index",
            "node": "fsync of each file and of its folder before acknowledging; UID checks",
            "cpus": os.cpu_count(), "python": sys.version.split()[0],
        },
        "single": {n: _summary(single[n], total_bytes) for n in names},
        "stored_files": stored, "expected_files_per_receiver": expected,
    }
    if args.parallel > 1:
        result[f"parallel{args.parallel}"] = {n: _summary(parallel[n], total_bytes) for n in names}
    ratios: dict[str, float] = {}
    for kind, times in (("single", single), (f"parallel{args.parallel}", parallel)):
        if "node" not in names or not times["node"]:
            continue
        node_median = statistics.median(times["node"])
        for other in names:
            if other != "node" and times[other]:
                ratios[f"{kind}_node_vs_{other}"] = round(statistics.median(times[other]) / node_median, 3)
    result["node_throughput_ratio"] = ratios
    return result


def _receivers(text: str) -> list[str]:
    """``--receivers``: a comma-separated subset of node, storescp, orthanc."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - {"node", "storescp", "orthanc"})
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown receiver(s) {', '.join(unknown) or '(none given)'}: give a comma-separated subset of "
            "node, storescp, orthanc (the node is started as --receiver says)")
    return names


def _has_serve() -> bool:
    try:
        from dicomnode import cli
    except Exception:  # noqa: BLE001 - any import problem means: not available
        return False
    return hasattr(cli, "cmd_serve")


def main(argv: list[str] | None = None) -> int:
    """Run the ingest benchmark and print its JSON; returns the exit code."""
    parser = argparse.ArgumentParser(prog="dicomnode bench ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=4, help="storescu processes for the parallel run (1 = skip)")
    parser.add_argument("--receiver", choices=("auto", "serve", "scp", "scp-stock"), default="auto",
                        help="how to run the node: the full `dicomnode serve` or the StorageSCP alone")
    parser.add_argument("--receivers", type=_receivers, default="node,storescp,orthanc",
                        help="comma-separated subset of node, storescp, orthanc")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-results", action="store_true",
                        help="skip the SEG + SR encoding figures (dicomnode bench results)")
    parser.add_argument("--work-dir", type=Path, default=None, help="parent of the temp folder (same disk as data)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.slices < args.parallel:
        parser.error("use --rounds >= 1 and --slices >= --parallel")
    for tool in (STORESCU, STORESCP):
        if not Path(tool).exists():
            parser.error(f"{tool} is missing: apt-get install dcmtk")
    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-", dir=args.work_dir) as tmp:
        result = run(args, Path(tmp))
    if not args.no_results:
        # Result encoding (SEG + SR, 300 slices, 6 segments) in a fresh process, so its first call is cold.
        import subprocess
        import sys
        proc = subprocess.run([sys.executable, "-m", "dicomnode", "bench", "results", "--slices", str(args.slices)],
                              capture_output=True, text=True)
        try:
            result["result_encoding"] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            result["result_encoding"] = {"error": (proc.stderr or proc.stdout)[-2000:]}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
