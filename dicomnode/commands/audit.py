"""``dicomnode audit [--since WHEN] [--event NAME] [--json]``: who sent what, and where the results went.

Events (written by the node into the index's audit table; UIDs, AE titles, addresses and counts only, no PHI):

=====================  ======================================================================================
received               a series was complete: its sender(s) (calling AE, address), instances, bytes, modality
series complete        a job was queued for it (rule, profile, job id)
job done / job failed  the analysis finished (result count, destinations) or failed for good (error)
result sent            one result instance reached a destination (AE@host:port)
result dead-lettered   a result could not be sent after every attempt
retention deleted      retention removed a series' received instances (counts, bytes)
config reloaded        SIGHUP: the new peers, destinations and rules
=====================  ======================================================================================

``--since`` takes an ISO date and time in local time (``2026-11-25T10:00``, ``2026-11-25``) or an age
(``90s``, ``15m``, ``1h``, ``7d``); default: the last 24 hours.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime
from typing import Any

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """``1h``, ``7d``... (an age) or an ISO date/time in local time -> a Unix time; ValueError saying what to use."""
    now = time.time() if now is None else now
    m = _AGE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: use an age such as 90s, 15m, 1h or 7d, or a local date and time "
                         f"such as 2026-11-25T10:00") from None


def _line(e: dict[str, Any]) -> str:
    d = e["detail"]
    ts = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
    ev = e["event"]
    if ev == "received":
        who = ", ".join(f"{s['calling_ae'] or '?'}@{s['peer_host'] or '?'} ({s['instances']})"
                        for s in d.get("senders", []))
        what = f"{d.get('modality', '')} {d.get('instances', 0)} instances, {d.get('bytes', 0) / 1e6:.1f} MB"
        rest = f"from {who}: {what}; {d.get('outcome', '')}"
    elif ev == "result sent":
        rest = f"-> {e['actor']}  SOP {d.get('sop_instance_uid', '')}"
    elif ev == "result dead-lettered":
        rest = f"-> {e['actor']}  export #{d.get('export_id')}: {d.get('error', '')}"
    elif ev == "series complete":
        rest = f"rule {d.get('rule')}, profile {d.get('profile')}, job #{d.get('job_id')}"
    elif ev == "job done":
        rest = f"job #{d.get('job_id')} {d.get('profile', '')}: {d.get('results')} result(s) -> " \
               f"{', '.join(d.get('destinations', [])) or '(data folder)'}"
    elif ev == "job failed":
        rest = f"job #{d.get('job_id')}: {d.get('error', '')}"
    elif ev == "retention deleted":
        rest = f"{d.get('instances')} instances, {d.get('bytes', 0) / 1e6:.1f} MB, {d.get('result_dirs')} result " \
               f"folder(s)"
    else:
        rest = json.dumps(d, sort_keys=True)
    series = f" series {e['series_uid']}" if e["series_uid"] else ""
    return f"{ts}  {ev:<20}{series}  {rest}"


def cmd_audit(a: argparse.Namespace) -> int:
    from dicomnode.commands._common import node_db as _db

    try:
        since = parse_since(a.since)
    except ValueError as e:
        print(f"dicomnode audit: {e}", file=sys.stderr)
        return 2
    _cfg, db = _db(a)
    events = db.list_audit(since, limit=a.limit)
    if a.event:
        events = [e for e in events if e["event"] in a.event]
    if a.series:
        events = [e for e in events if e["series_uid"] == a.series]
    if a.json:
        print(json.dumps(events, indent=2))
        return 0
    if not events:
        print(f"no audit events since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}")
        return 0
    for e in events:
        print(_line(e))
    return 0


def add_parser(subparsers: Any) -> None:
    s = subparsers.add_parser("audit", help="who sent what, and where results went (the audit trail)")
    s.add_argument("--config", "-c", metavar="FILE",
                   help="node configuration (TOML); default: $DICOMNODE_CONFIG or the embedded defaults")
    s.add_argument("--since", default="24h", metavar="WHEN",
                   help="an age (90s, 15m, 1h, 7d) or a local date/time (2026-11-25T10:00); default 24h")
    s.add_argument("--event", action="append", metavar="NAME",
                   help="only this event (repeatable), e.g. received, 'result sent'")
    s.add_argument("--series", metavar="UID", help="only events of this Series Instance UID")
    s.add_argument("--limit", type=int, default=100000, help="at most this many events (oldest first)")
    s.add_argument("--json", action="store_true", help="JSON list of events")
    s.set_defaults(func=cmd_audit)
