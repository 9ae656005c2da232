"""``dicomnode config check|show``: validate a configuration, print the one in force.

``check FILE [--runtime]``: every error of the file (key, value, fix), exit 2; with ``--runtime`` also what would
stop ``serve`` from starting: the port in use, the data folder not writable (:func:`dicomnode.node.preflight`;
nothing is created). ``show [FILE] [--json]``: the effective configuration, defaults filled in and secrets
redacted (:func:`dicomnode.config.effective_config`), as TOML that ``config check`` accepts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("config", help="validate a configuration file, or print the effective one",
                              description="Configuration tools. Exit codes: 0 valid, 2 invalid (every error is "
                                          "named: key, value, fix).")
    cs = s.add_subparsers(dest="config_cmd", required=True, metavar="ACTION")
    c = cs.add_parser("check", help="validate a configuration file; exit 2 with every error if it is invalid",
                      description="Validate FILE: every error with its key, value and fix; exit 2 if any. With "
                                  "--runtime, also try what `serve` needs: the port free, the data folder writable.")
    c.add_argument("file", metavar="FILE", help="the node's TOML configuration file")
    c.add_argument("--runtime", action="store_true",
                   help="also check that node.port (and metrics.port) can be listened on and node.data_dir can be "
                        "written (nothing is created)")
    c.set_defaults(func=cmd_check)
    sh = cs.add_parser("show", help="print the effective configuration (defaults filled in, secrets redacted)",
                       description="Print the configuration in force: FILE (default: $DICOMNODE_CONFIG, else the "
                                   "embedded defaults) with every default filled in and the shipped profiles, as "
                                   "TOML; values of secret keys (password, token...) are redacted.")
    sh.add_argument("file", metavar="FILE", nargs="?", help="the configuration file; default: $DICOMNODE_CONFIG "
                                                            "or the embedded defaults")
    sh.add_argument("--json", action="store_true", help="JSON instead of TOML")
    sh.set_defaults(func=cmd_show)


def check(path: str, *, runtime: bool = False) -> tuple[object | None, list[str]]:
    """The config of ``path`` (None if invalid) and the error lines (empty when all is well)."""
    from dicomnode.config import load_config
    from dicomnode.errors import ConfigError, ConfigErrors

    try:
        cfg = load_config(path)
    except ConfigErrors as e:
        return None, [f"{e.source}: {err}" for err in e.errors]
    except ConfigError as e:
        return None, [str(e)]
    if runtime:
        from dicomnode.node import preflight
        errors = preflight(cfg, port_hint=f"node.port in {path}")
        if errors:
            return None, [f"{path}: {e}" for e in errors]
    return cfg, []


def cmd_check(a: argparse.Namespace) -> int:
    cfg, errors = check(a.file, runtime=a.runtime)
    if errors:
        print(f"{a.file}: {len(errors)} error(s):", file=sys.stderr)
        for line in errors:
            print(f"  - {line}", file=sys.stderr)
        return 2
    for w in getattr(cfg, "warnings", ()):
        print(f"warning: {w}", file=sys.stderr)
    print(f"{a.file}: OK — AE {cfg.node.ae_title} on {cfg.node.bind}:{cfg.node.port}, data in {cfg.node.data_dir}, "
          f"{len(cfg.peers)} peer(s), {len(cfg.destinations)} destination(s), {len(cfg.rules)} rule(s), "
          f"profiles: {', '.join(sorted(cfg.profiles))}" + ("; port and data folder usable" if a.runtime else ""))
    return 0


def cmd_show(a: argparse.Namespace) -> int:
    from dicomnode.config import effective_config, load_config, to_toml
    from dicomnode.errors import ConfigError

    path = a.file or os.environ.get("DICOMNODE_CONFIG") or None
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"dicomnode: invalid configuration\n{e}", file=sys.stderr)
        return 2
    doc = effective_config(cfg)
    print(json.dumps(doc, indent=2) if a.json else to_toml(doc), end="" if not a.json else "\n")
    return 0
