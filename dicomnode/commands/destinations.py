"""``dicomnode destinations test [NAME...]``: C-ECHO every configured destination, as the node connects to it.

The logic is :func:`dicomnode.admin.check_destinations`. Exit codes: 0 every destination answered; 1 some did not
(each named with the reason); 2 bad usage or an invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("destinations", help="test the configured destinations (C-ECHO)",
                              description="The [[destinations]] of the configuration.")
    ds = s.add_subparsers(dest="destinations_cmd", required=True, metavar="ACTION")
    t = ds.add_parser("test", help="C-ECHO every destination with the node's AE title and TLS settings",
                      description="C-ECHO each destination (or those named) as the node's outbox connects: "
                                  "calling AE node.ae_title, the destination's TLS settings, export.timeout_seconds. "
                                  "Exit 1 if any does not answer.")
    t.add_argument("names", nargs="*", metavar="NAME", help="destination names; default: all")
    t.add_argument("--timeout", type=float, metavar="SECONDS", help="default: export.timeout_seconds")
    t.add_argument("--json", action="store_true", help="one JSON list instead of text")
    t.add_argument("--config", "-c", metavar="FILE",
                   help="node configuration (TOML); default: $DICOMNODE_CONFIG or the embedded defaults")
    t.set_defaults(func=cmd_test)


def cmd_test(a: argparse.Namespace) -> int:
    from dicomnode.admin import AdminError, check_destinations
    from dicomnode.commands._common import config_or_exit as _config_or_exit

    cfg = _config_or_exit(a.config)
    if not cfg.destinations:
        print("dicomnode destinations test: no [[destinations]] in the configuration; add one (name, ae_title, "
              "host, port)", file=sys.stderr)
        return 2
    try:
        checks = check_destinations(cfg, names=tuple(a.names), timeout_seconds=a.timeout)
    except AdminError as e:
        print(f"dicomnode destinations test: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        for c in checks:
            line = (f"{c.name:<12} {c.address}{' (TLS)' if c.tls else ''}: "
                    + (f"OK ({c.seconds * 1000:.0f} ms)" if c.ok else f"FAILED: {c.error}"))
            print(line, file=sys.stdout if c.ok else sys.stderr)
    return 0 if all(c.ok for c in checks) else 1
