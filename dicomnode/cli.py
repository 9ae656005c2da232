"""The ``dicomnode`` command.

Exit codes: 0 success; 1 the command ran but something failed (a file not sent, a job failed); 2 bad usage or an
invalid configuration (the message names the key, the value and the fix).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from dicomnode import __version__
from dicomnode.commands._common import config_or_exit as _config_or_exit
from dicomnode.commands._common import load_config_file as _load_config
from dicomnode.commands._common import node_db as _db
from dicomnode.errors import ConfigError, DicomnodeError
from dicomnode.obs.status import status_dict


# ---------------------------------------------------------------------------------------------------------------
def _serve_config(a: argparse.Namespace):
    """The file's config with the command line's overrides (serve --port/--aet/--bind/--data-dir/--log-format)."""
    from dicomnode.config import apply_overrides
    return apply_overrides(_load_config(a.config), port=a.port, ae_title=a.aet, bind=a.bind, data_dir=a.data_dir,
                           log_format=a.log_format)


def cmd_serve(a: argparse.Namespace) -> int:
    """Start the node in the foreground. Start-up errors: one line each naming the key and the fix, exit 2, and
    nothing created (:func:`dicomnode.node.preflight` runs before the data folder is made)."""
    import logging

    from dicomnode.node import preflight, run_forever
    from dicomnode.obs.logs import setup_logging

    try:
        cfg = _serve_config(a)
    except ConfigError as e:
        print(f"dicomnode: invalid configuration\n{e}", file=sys.stderr)
        return 2
    where = f"node.port in {a.config}" if a.config else "node.port in the config file"
    errors = preflight(cfg, port_hint=f"serve --port, or {where}")
    if errors:
        for e in errors:
            print(f"dicomnode serve: {e}", file=sys.stderr)
        return 2
    setup_logging(cfg.node.log_format, getattr(logging, a.log_level.upper()))
    try:
        from dicomnode.web.server import node_http_server
        return run_forever(cfg, reload=lambda: _serve_config(a), http=node_http_server)
    except OSError as e:  # lost a race with another program after the checks: still one line
        print(f"dicomnode serve: cannot start: {e.strerror or e} (node.port {cfg.node.port}, node.data_dir "
              f"{cfg.node.data_dir}); run `dicomnode config check --runtime FILE`", file=sys.stderr)
        return 2


def _client_tls(a: argparse.Namespace, command: str):  # noqa: ANN202 - ssl.SSLContext | None
    """The TLS context the --tls* options ask for (None without them). Raises SystemExit(2) naming a bad option."""
    if not (a.tls or a.tls_ca or a.tls_cert or a.tls_key):
        return None
    import ssl

    from dicomnode.net.tls import client_context
    for opt, path in (("--tls-ca", a.tls_ca), ("--tls-cert", a.tls_cert), ("--tls-key", a.tls_key)):
        if path and not Path(path).is_file():
            print(f"dicomnode {command}: {opt} {path}: no such file", file=sys.stderr)
            raise SystemExit(2)
    if a.tls_key and not a.tls_cert:
        print(f"dicomnode {command}: --tls-key needs --tls-cert (the certificate of that key)", file=sys.stderr)
        raise SystemExit(2)
    try:
        return client_context(ca_certificates=a.tls_ca or "", certificate=a.tls_cert or "",
                              private_key=a.tls_key or "")
    except (ssl.SSLError, OSError, ValueError) as e:
        print(f"dicomnode {command}: cannot use the TLS files (--tls-ca {a.tls_ca or '-'}, --tls-cert "
              f"{a.tls_cert or '-'}, --tls-key {a.tls_key or '-'}): {e}; give PEM files, the key matching the "
              "certificate", file=sys.stderr)
        raise SystemExit(2)


def cmd_echo(a: argparse.Namespace) -> int:
    from dicomnode.net.scu import echo
    ssl_context = _client_tls(a, "echo")
    try:
        status = echo(a.host, a.port, ae_title=a.aec, calling_ae=a.aet, timeout_s=a.timeout, ssl_context=ssl_context)
    except DicomnodeError as e:
        print(f"dicomnode echo: {e}", file=sys.stderr)
        return 1
    print(f"C-ECHO {a.aec}@{a.host}:{a.port}: status 0x{status:04X}{' (success)' if status == 0 else ''}")
    return 0 if status == 0 else 1


def _unsendable(path: Path) -> str | None:
    """Why a DICOM file cannot be C-STOREd at all (empty or invalid SOP UIDs), or None."""
    from dicomnode.io.load import read_header
    from dicomnode.uids import is_valid_uid
    try:
        ds = read_header(path)
    except Exception as e:  # noqa: BLE001 - named per file
        return f"cannot read its header ({e})"
    bad = []
    for keyword, tag in (("SOPClassUID", "(0008,0016)"), ("SOPInstanceUID", "(0008,0018)")):
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            bad.append(f"empty {keyword} {tag}")
        elif not is_valid_uid(value):
            bad.append(f"{keyword} {tag} is not a valid UID")
    if bad:
        return (f"{' and '.join(bad)}: a DICOM peer cannot store a file without them; repair the header (e.g. DCMTK's "
                "dcmodify) and send again")
    return None


def _send_error(error: str, calling_ae: str) -> str:
    """A send failure in the words of the user: the context the peer refused, the AE title it does not know."""
    m = re.search(r"No presentation context for '([^']*)' has been accepted by the peer with '([^']*)' transfer "
                  r"syntax", error)
    if m:
        return (f"the destination accepted no presentation context for SOP class {m.group(1) or '(empty)'} in "
                f"{m.group(2)}: it does not take this kind of object or this encoding (decompress it, e.g. with "
                "DCMTK's dcmdjpeg / dcmdjp2k, or ask its administrator)")
    if "Calling AE title not recognised" in error or "reason 3" in error and "source 1" in error:
        return (f"{error}; the peer does not accept our calling AE title {calling_ae}: pass --aet with one it "
                "knows (a dicomnode lists them as [[peers]])")
    return error


def cmd_send(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dicomnode.net.scu import iter_dicom_files, parse_address, send_files
    try:
        ae, host, port = parse_address(a.to)
    except ValueError as e:
        print(f"dicomnode send: --to {e}", file=sys.stderr)
        return 2
    missing = [p for p in a.paths if not Path(p).exists()]
    if missing:
        print(f"dicomnode send: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    skipped: list[Path] = []
    files = iter_dicom_files(a.paths, skipped)
    if skipped:
        print(f"skipped {len(skipped)} file(s) that are not DICOM: {', '.join(str(f) for f in skipped[:5])}"
              f"{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
    if not files:
        print("dicomnode send: no files found under the given paths", file=sys.stderr)
        return 2
    refused: dict[str, list[Path]] = {}
    sendable = []
    for f in files:
        why = _unsendable(f)
        if why is None:
            sendable.append(f)
        else:
            refused.setdefault(why, []).append(f)
    if refused:
        n = sum(map(len, refused.values()))
        print(f"{n} file(s) will not be sent:", file=sys.stderr)
        for why, fs in refused.items():
            print(f"  {why}:", file=sys.stderr)
            for f in fs:
                print(f"    {f}", file=sys.stderr)
    if not sendable:
        print(f"sent 0 of {len(files)} file(s) to {a.to}")
        return 1
    files = sendable
    ssl_context = _client_tls(a, "send")
    bar = tqdm(total=len(files), unit="file", desc=f"send to {ae}", file=sys.stderr, disable=a.quiet)
    try:
        results = send_files(files, host=host, port=port, ae_title=ae, calling_ae=a.aet, timeout_s=a.timeout,
                             ssl_context=ssl_context, on_sent=lambda r: bar.update(1))
    except DicomnodeError as e:
        bar.close()
        print(f"dicomnode send: {_send_error(str(e), a.aet)}", file=sys.stderr)
        return 1
    bar.close()
    failed = [r for r in results if not r.ok]
    total = len(results) + sum(map(len, refused.values()))
    print(f"sent {len(results) - len(failed)} of {total} file(s) to {a.to}")
    if failed:
        print(f"{len(failed)} failure(s):", file=sys.stderr)
        for r in failed:
            print(f"  {r.path}: {_send_error(r.error or '', a.aet)}", file=sys.stderr)
    return 1 if failed or refused else 0


def _ts(t: float | None) -> str:
    """ISO 8601 local time with its UTC offset, for people; "-" for none."""
    from dicomnode.admin import iso
    return iso(t) or "-"


def _activity(a: dict[str, Any]) -> str:
    return (f"{a.get('instances', 0)} instances, {a.get('series', 0)} series, {a.get('jobs_done', 0)} jobs done "
            f"({a.get('jobs_failed', 0)} failed), {a.get('results_sent', 0)} results sent")


def cmd_status(a: argparse.Namespace) -> int:
    cfg, db = _db(a)
    if a.watch is None:
        return _print_status(cfg, db, a.json)
    try:
        while True:
            if not a.json and sys.stdout.isatty():
                print("\033[H\033[2J", end="")  # clear the terminal, as watch(1) does
            _print_status(cfg, db, a.json)
            sys.stdout.flush()
            time.sleep(a.watch)
            if not a.json:
                print()
    except KeyboardInterrupt:
        return 0


def _print_status(cfg: Any, db: Any, as_json: bool) -> int:
    st = status_dict(cfg, db)
    if as_json:
        print(json.dumps(st, default=str))
        return 0
    print(f"node {st['node']['ae_title']} :{st['node']['port']}  data {st['node']['data_dir']}  "
          f"instances {st['instances']}")
    sm = st["summary"]
    disk = sm["disk"]
    print(f"disk free {disk['free_mb']} MB (watermark {disk['min_free_disk_mb']} MB: "
          f"{'accepting' if disk['accepting'] else 'REFUSING new associations'})  "
          f"dead letters {sm['dead_letters']}  metrics {sm['metrics_url'] or 'off'}")
    print(f"last hour: {_activity(sm['last_hour'])}")
    print(f"last 24 h: {_activity(sm['last_24h'])}")
    print(f"series ({len(st['series'])} most recent):")
    for s in st["series"]:
        when = (f"completes in {s['completes_in_s']:.0f} s ({_ts(s['completes_at'])}) if nothing more arrives"
                if s["completes_at"] else s["note"])
        print(f"  {s['series_uid']}  {s['modality']:<3} {s['state']:<9} {s['instances']:>5} inst  "
              f"last {_ts(s['last_received_at'])}  {when}")
    print(f"jobs: {st['jobs']['counts'] or 'none'}")
    for j in st["jobs"]["recent"][:20]:
        print(f"  #{j['id']:<5} {j['state']:<8} {j['profile']:<8} {j['series_uid']}  "
              f"{(j['error'] or '') if j['state'] != 'done' else (j['result_dir'] or '')}")
    c = st.get("cluster")
    if c:
        summary = c.get("error") or (f"{c.get('n_workers', 0)} worker(s), {c.get('threads', 0)} thread(s), "
                                     f"{c.get('tasks_processing', 0)} task(s) in flight")
        print(f"cluster: {summary}  dashboard {c.get('dashboard') or '-'}")
        for w in c.get("workers", []):
            print(f"  {w.get('name', ''):<8} {w.get('address', '')}  {w.get('tasks', 0)} task(s)  "
                  f"{w.get('memory_mb', '?')}/{w.get('memory_limit_mb', '?')} MB")
    print(f"outbox: {st['outbox']['counts'] or 'empty'}")
    for e in st["outbox"]["dead"]:
        print(f"  dead #{e['id']} -> {e['destination']}: {e['error']}  (requeue: dicomnode exports retry {e['id']})")
    return 0


def cmd_jobs(a: argparse.Namespace) -> int:
    from dicomnode import admin
    from dicomnode.store.db import JobState
    cfg, db = _db(a)
    if a.action == "list":
        rows = admin.jobs_view(db, state=JobState(a.state) if a.state else None)
        if a.json:
            print(json.dumps(rows, indent=2))
            return 0
        for j in rows:
            print(f"#{j['id']:<5} {j['state']:<8} attempts {j['attempts']}  {j['profile']:<8} {j['series_uid']}  "
                  f"{j['error'] or ''}")
        return 0
    if a.action == "retry" and a.failed:
        ids = admin.retry_failed_jobs(db, actor=admin.cli_actor())
        print(f"{len(ids)} failed job(s) queued again{': ' + ', '.join(map(str, ids)) if ids else ''}"
              f"{' (a running node picks them up within a second)' if ids else ''}")
        return 0
    if a.id is None:
        hint = " (or --failed for every failed job)" if a.action == "retry" else ""
        print(f"dicomnode jobs {a.action}: give the job ID{hint}", file=sys.stderr)
        return 2
    if a.action == "show":
        try:
            d = admin.job_view(db, a.id)
        except admin.NotFoundError:
            print(f"dicomnode jobs: no job {a.id}", file=sys.stderr)
            return 1
        for k in ("not_before", "lease_until", "created_at", "started_at", "finished_at"):
            d[k] = admin.iso(d[k], milliseconds=True)  # ISO 8601
        print(json.dumps(d, indent=2, default=str))
        return 0
    try:
        admin.requeue_job(db, a.id, actor=admin.cli_actor())
    except admin.NotFoundError:
        print(f"dicomnode jobs: no job {a.id}", file=sys.stderr)
        return 1
    except admin.AdminError as e:
        print(f"dicomnode jobs retry: {e}", file=sys.stderr)
        return 1
    print(f"job {a.id} queued again (a running node picks it up within a second)")
    return 0


def cmd_exports(a: argparse.Namespace) -> int:
    from dicomnode import admin
    from dicomnode.store.db import ExportState
    cfg, db = _db(a)
    if a.action == "list":
        now = time.time()
        for e in admin.exports_view(db, state=ExportState(a.state) if a.state else None, destination=a.destination,
                                    now=now):
            when = ""
            if e["state"] == ExportState.PENDING.value:
                due = e["next_attempt_at"]
                when = "next attempt now" if due <= now else f"next attempt {_ts(due)}"
            elif e["state"] == ExportState.SENT.value:
                when = f"sent {_ts(e['sent_at'])}"
            elif e["state"] == ExportState.DEAD.value:
                when = f"dead: dicomnode exports retry {e['id']}"
            print(f"#{e['id']:<5} {e['state']:<7} -> {e['destination']:<10} attempts {e['attempts']}  {when}  "
                  f"{e['sop_instance_uid']}  {e['last_error'] or ''}".rstrip())
        return 0
    if a.dead:
        if a.destination and a.destination not in {d.name for d in cfg.destinations}:
            print(f"dicomnode exports retry: --destination {a.destination}: no such destination; configured: "
                  f"{', '.join(d.name for d in cfg.destinations) or 'none'}", file=sys.stderr)
            return 2
        ids = admin.retry_dead_exports(db, destination=a.destination, actor=admin.cli_actor())
        print(f"{len(ids)} dead-lettered export(s){' to ' + a.destination if a.destination else ''} queued again"
              f"{': ' + ', '.join(map(str, ids)) if ids else ''}")
        return 0
    if a.id is None:
        print("dicomnode exports retry: give the export ID (or --dead for every dead-lettered one)",
              file=sys.stderr)
        return 2
    try:
        admin.requeue_export(db, a.id, actor=admin.cli_actor())
    except admin.AdminError as e:
        print(f"dicomnode exports retry: {e}", file=sys.stderr)
        return 1
    print(f"export {a.id} queued again")
    return 0


def cmd_process(a: argparse.Namespace) -> int:
    """Exit codes: 0 done; 1 the input cannot be processed (no DICOM image files, several series, a refused or
    broken series, an analysis error: the message names the files and the next command); 2 bad usage (not a
    folder, unknown profile, invalid config). On failure no output folder is left behind (unless it existed)."""
    import shutil

    from tqdm import tqdm

    from dicomnode.jobs.batch import find_series
    from dicomnode.jobs.chain import run_chain
    from dicomnode.jobs.spec import ChainSpec
    from dicomnode.config import DEFAULT_PROFILE_BY_MODALITY, GENERIC_PROFILE

    cfg = _config_or_exit(a.config)
    src = Path(a.dir)
    if not src.is_dir():
        print(f"dicomnode process: {src} is not a folder; give the folder holding the DICOM files of one series",
              file=sys.stderr)
        return 2
    found = find_series(src)
    if len(found.series) > 1:
        parts = "; ".join(f"{uid} ({len(fs)} files in {fs[0].parent})" for uid, fs in sorted(found.series.items()))
        print(f"dicomnode process: {src} holds {len(found.series)} series: {parts}. `dicomnode process` takes one "
              f"series; run `dicomnode batch {src} --out {a.out}` for all of them, or give the folder of one",
              file=sys.stderr)
        return 1
    files = next(iter(found.series.values()), [])
    if not files and found.failures:  # DICOM images, but no usable series: the loader names the file and field
        from dicomnode.net.scu import iter_dicom_files
        files = iter_dicom_files([src], [])
    if not files:
        some = sorted(p for p in src.rglob("*") if p.is_file())
        named = f"; e.g. {', '.join(str(p) for p in some[:3])}" if some else ""
        what = []
        if found.not_dicom:
            what.append(f"{found.not_dicom} file(s) that are not DICOM")
        if found.not_images:
            what.append(f"{found.not_images} DICOM object(s) that are not images ({_sop_class_names(some)}: for "
                        "the features of contours use `dicomnode radiomics`)")
        detail = f" ({', '.join(what)}{named})" if what else ""
        print(f"dicomnode process: {src} holds no DICOM image files{detail}"
              "; give the folder holding the DICOM files of one series", file=sys.stderr)
        return 1
    if (found.not_dicom or found.not_images) and not a.quiet:
        print(f"skipped {found.not_dicom + found.not_images} file(s) in {src} that are not DICOM images",
              file=sys.stderr)
    profile_name = a.profile
    if profile_name is None:
        from dicomnode.io.headers import read_tags
        try:
            modality = read_tags(files[0]).get("Modality", "")
        except Exception as e:  # noqa: BLE001
            print(f"dicomnode process: {files[0]}: not readable as DICOM ({e})", file=sys.stderr)
            return 1
        profile_name = DEFAULT_PROFILE_BY_MODALITY.get(modality.upper(), GENERIC_PROFILE)
    if profile_name not in cfg.profiles:
        print(f"dicomnode process: --profile {profile_name!r}: no such profile; use one of "
              f"{', '.join(sorted(cfg.profiles))}", file=sys.stderr)
        return 2
    profile = cfg.profiles[profile_name]
    context = _process_context(src, files[0], a.context or [], quiet=a.quiet)
    if context is None:
        return 2
    out_existed = Path(a.out).exists()
    bar = tqdm(total=len(profile.steps) + 1, desc="process", unit="step", file=sys.stderr, disable=a.quiet)

    def progress(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    try:
        outcome = run_chain(ChainSpec(files=tuple(map(str, files)), profile=profile, out_dir=a.out,
                                      uid_root=cfg.node.uid_root, context=context), progress=progress)
    except DicomnodeError as e:
        bar.close()
        if not out_existed:
            shutil.rmtree(a.out, ignore_errors=True)  # nothing half-made left behind
        print(f"dicomnode process: {src}: {e}", file=sys.stderr)
        return 1
    bar.update(1)
    bar.close()
    print(f"{outcome.series_uid}: {len(outcome.files)} result file(s) and results.json in {a.out} "
          f"({outcome.seconds:.1f} s)")
    return 0


def _process_context(src: Path, first: Path, folders: Sequence[str], *, quiet: bool) -> tuple | None:
    """``--context`` folders that hold an image series of the same study and frame of reference as ``src`` (CT
    first; at most MAX_CONTEXT_SERIES); None (exit 2) when one is not a folder. A folder of another study or frame is
    not used, and said so."""
    from dicomnode.evaluation.context import context_series
    from dicomnode.jobs.spec import MAX_CONTEXT_SERIES
    from dicomnode.analysis.scene_context import modality_rank

    found = []
    for f in folders:
        if not Path(f).is_dir():
            print(f"dicomnode process: --context {f}: not a folder; give the folder of another series of the same "
                  "study (e.g. the CT of a PET/CT)", file=sys.stderr)
            return None
        got = context_series(src, first, [Path(f)])
        if not got and not quiet:
            print(f"--context {f}: no image series of the same study and frame of reference as {src}: not used",
                  file=sys.stderr)
        found += got
    return tuple(sorted(found, key=lambda c: modality_rank(c.modality))[:MAX_CONTEXT_SERIES])


def _sop_class_names(files: Sequence[Path], limit: int = 50) -> str:
    """The SOP classes (by name) of the DICOM files among ``files``, e.g. "RT Structure Set Storage"."""
    import pydicom
    names: list[str] = []
    for f in files[:limit]:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            uid = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        except Exception:  # noqa: BLE001 - not DICOM: counted elsewhere
            continue
        if uid:
            name = pydicom.uid.UID(str(uid)).name
            if name not in names:
                names.append(name)
    return ", ".join(names) or "SEG, SR, RT..."


def _benches() -> list[str]:
    import pkgutil

    import dicomnode.bench
    return sorted(m.name for m in pkgutil.iter_modules(dicomnode.bench.__path__) if not m.name.startswith("_"))


def cmd_bench(a: argparse.Namespace, rest: Sequence[str]) -> int:
    import importlib
    return int(importlib.import_module(f"dicomnode.bench.{a.what}").main(list(rest)) or 0)


# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dicomnode", description="A PACS-integrated DICOM node.")
    p.add_argument("--version", action="version", version=f"dicomnode {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", metavar="FILE",
                        help="node configuration (TOML); default: $DICOMNODE_CONFIG or the embedded defaults")
        return sp

    s = with_config(sub.add_parser(
        "serve", help="run the node in the foreground (logs on stderr)",
        description="Run the node in the foreground: receive, store, analyse, send. Logs go to stderr. SIGTERM and "
                    "SIGINT stop it cleanly, SIGHUP reloads rules, peers, destinations and profiles. The options "
                    "override the file's [node] keys. Exit 2 with one line naming the key and the fix when it "
                    "cannot start (invalid config, port in use, data folder not writable)."))
    s.add_argument("--port", type=int, metavar="PORT", help="overrides node.port (DICOM port to listen on)")
    s.add_argument("--aet", metavar="AE", help="overrides node.ae_title (our AE title)")
    s.add_argument("--bind", metavar="ADDRESS", help="overrides node.bind (e.g. 0.0.0.0 or 127.0.0.1)")
    s.add_argument("--data-dir", metavar="DIR", help="overrides node.data_dir (relative to the working folder)")
    s.add_argument("--log-format", choices=["text", "json"], help="overrides node.log_format")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="least level logged (default: info)")
    s.set_defaults(func=cmd_serve)

    def add_tls_options(sp: argparse.ArgumentParser) -> None:
        g = sp.add_argument_group("DICOM TLS (any of these turns it on)")
        g.add_argument("--tls", action="store_true", help="use TLS; trust the system's CAs unless --tls-ca")
        g.add_argument("--tls-ca", metavar="PEM", help="CA certificate(s) the peer's certificate must chain to")
        g.add_argument("--tls-cert", metavar="PEM", help="our certificate, for peers that require one")
        g.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert (if not inside it)")

    s = sub.add_parser("echo", help="C-ECHO a DICOM peer")
    s.add_argument("host", help="the peer's host name or address")
    s.add_argument("port", type=int, help="the peer's DICOM port")
    s.add_argument("--aet", default="DICOMNODE", help="our (calling) AE title")
    s.add_argument("--aec", default="ANY-SCP", help="the peer's (called) AE title")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds")
    add_tls_options(s)
    s.set_defaults(func=cmd_echo)

    s = sub.add_parser("send", help="C-STORE files and folders to a peer")
    s.add_argument("paths", nargs="+", metavar="PATH", help="DICOM files or folders (searched recursively)")
    s.add_argument("--to", required=True, metavar="AE@HOST:PORT", help="the peer: its AE title, host and port")
    s.add_argument("--aet", default="DICOMNODE", help="our (calling) AE title")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_tls_options(s)
    s.set_defaults(func=cmd_send)

    s = with_config(sub.add_parser(
        "status", help="series, jobs and outbox at a glance",
        description="The node's series (open ones with the time they complete), jobs, outbox and activity, read "
                    "from its data folder (the node may be running or not). Times are ISO 8601."))
    s.add_argument("--json", action="store_true", help="one JSON object (epoch seconds) instead of text")
    s.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                   help="print again every SECONDS (default 2) until Ctrl-C; with --json one object per line")
    s.set_defaults(func=cmd_status)

    s = with_config(sub.add_parser("jobs", help="list, show or retry jobs",
                                   description="The job queue. retry ID (or --failed: every failed job) queues "
                                               "jobs again; a running node picks them up within a second."))
    s.add_argument("action", choices=["list", "show", "retry"], help="list jobs, show one, or retry")
    s.add_argument("id", nargs="?", type=int, metavar="ID", help="the job id (show, retry)")
    s.add_argument("--state", choices=["pending", "running", "done", "failed"], help="list: only jobs in this state")
    s.add_argument("--failed", action="store_true", help="retry: every failed job")
    s.add_argument("--json", action="store_true", help="list: JSON")
    s.set_defaults(func=cmd_jobs)

    s = with_config(sub.add_parser("exports", help="list the outbox or requeue dead-lettered exports",
                                   description="The outbox: one row per result file and destination. list shows "
                                               "when the next attempt is due; retry ID (or --dead) requeues "
                                               "dead-lettered exports."))
    s.add_argument("action", choices=["list", "retry"], help="list the outbox, or retry")
    s.add_argument("id", nargs="?", type=int, metavar="ID", help="retry: the export id")
    s.add_argument("--state", choices=["pending", "sending", "sent", "dead"], help="list: only this state")
    s.add_argument("--dead", action="store_true", help="retry: every dead-lettered export")
    s.add_argument("--destination", metavar="NAME", help="list, retry --dead: only this destination")
    s.set_defaults(func=cmd_exports)

    s = with_config(sub.add_parser(
        "process", help="run the analysis chain on a folder holding one series",
        description="Run the analysis chain on the DICOM files of one series: seg.dcm, sr.dcm, derived/ and "
                    "results.json in OUT. Exit codes: 0 done; 1 the input cannot be processed (no DICOM images, "
                    "several series: use `dicomnode batch`, a refused or broken series: the message names the "
                    "files and the field); 2 bad usage (not a folder, unknown profile, invalid config). On failure "
                    "OUT is not left behind."))
    s.add_argument("dir", metavar="DIR", help="a folder with the DICOM files of one series")
    s.add_argument("--profile", help="profile name; default: the one for the series' modality")
    s.add_argument("--out", required=True, metavar="OUT", help="output folder (SEG, SR, results.json)")
    s.add_argument("--context", action="append", metavar="DIR",
                   help="a folder with another series of the same study on the same frame of reference (e.g. the "
                        "CT of a PET/CT, the T2 of an ADC map); the scene reads it only where the series' own image "
                        "leaves a stretch unknown; repeatable")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_process)

    s = sub.add_parser("bench", help="benchmarks that print JSON figures", add_help=False,
                       description="Benchmarks that print JSON figures; `dicomnode bench WHAT --help` lists the "
                                   "options of one.")
    s.add_argument("what", choices=_benches(), help="which benchmark")
    s.set_defaults(func=None, bench=True)

    import importlib
    import pkgutil

    import dicomnode.commands
    for m in sorted(pkgutil.iter_modules(dicomnode.commands.__path__), key=lambda m: m.name):
        if not m.name.startswith("_"):
            importlib.import_module(f"dicomnode.commands.{m.name}").add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from dicomnode.obs.logs import capture_warnings
    capture_warnings()  # library warnings quote patient data: scrubbed, once each, through logging
    from dicomnode.analysis.threads import pin_blas_threads
    pin_blas_threads()  # every command's analysis with one BLAS thread, as the node's jobs (the same values)
    parser = build_parser()
    if argv[:1] == ["bench"]:
        if len(argv) == 1 or argv[1] in ("-h", "--help"):
            print(f"usage: dicomnode bench {{{','.join(_benches())}}} [options]\n\nBenchmarks that print JSON "
                  "figures (no timed assertions anywhere: speed is measured here).\n`dicomnode bench WHAT --help` "
                  "lists the options of one.")
            return 0 if len(argv) > 1 else 2
        a, rest = parser.parse_known_args(argv)
        return cmd_bench(a, rest)
    a = parser.parse_args(argv)
    return int(a.func(a) or 0)


if __name__ == "__main__":
    sys.exit(main())
