"""``dicomnode audit [--since WHEN] [--event NAME] [--json]``: who sent what, and where the results went.

Events (written by the node into the index's audit table; UIDs, AE titles, addresses and counts only, no PHI):

=====================  ======================================================================================
received               a series was complete: its sender(s) (calling AE, address), instances, bytes, modality
series complete        a job was queued for it (rule, profile, job id)
job done / job failed  the analysis finished (result count, destinations) or failed for good (error)
result sent            one result instance reached a destination (AE@host:port)
result dead-lettered   a result could not be sent after every attempt
retention deleted      retention removed a series' received instances (counts, bytes)
config reloaded        SIGHUP or the console: the new peers, destinations and rules (actor: who)
job requeued           an operator retried a job (actor: the console account, or cli:<OS user>)
jobs requeued          every failed job retried at once
export requeued        one dead-lettered export retried; exports requeued: all of them (of one destination)
series reprocess       a stored series queued again (profile, destinations)
forced completion      an operator completed an open series before its quiet period ended
destination echoed     an operator C-ECHOed a destination from the console
login / login failed   console logins (actor: the name given; detail: the client address); logout
=====================  ======================================================================================

``--since`` takes an ISO date and time in local time (``2026-11-25T10:00``, ``2026-11-25``) or an age
(``90s``, ``15m``, ``1h``, ``7d``); default: the last 24 hours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dicomnode.admin import parse_since  # the --since syntax, shared with the console's audit filter

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
    from dicomnode.admin import audit_events
    _cfg, db = _db(a)
    events = audit_events(db, since=since, events=tuple(a.event or ()), series_uid=a.series, actor=a.user,
                          sender=a.sender, limit=a.limit)
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
    s.add_argument("--user", metavar="NAME", help="only events done by this actor: a console account, "
                                                   "cli:<OS user>, SIGHUP, or a destination for sends")
    s.add_argument("--sender", metavar="AE", help="only \"received\" events from this calling AE title")
    s.add_argument("--limit", type=int, default=100000, help="at most this many events (oldest first)")
    s.add_argument("--json", action="store_true", help="JSON list of events")
    s.set_defaults(func=cmd_audit)
