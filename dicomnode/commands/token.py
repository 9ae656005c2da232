"""``dicomnode token add|remove|list``: API tokens of the console, in the node's TOML file (``[[http.tokens]]``).

``add NAME --role R`` prints a new token once (use it as ``Authorization: Bearer <token>``) and stores only its
SHA-256; an existing token of that name is replaced (the old one stops working at the node's next reload).
Exit codes: 0 done; 1 the file could not be changed (named, left as it was); 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("token", help="console API tokens: add (or renew), remove, list",
                              description="API tokens of the web console (Authorization: Bearer <token>), kept in "
                                          "the node's TOML file as [[http.tokens]] with the token's SHA-256.")
    ts = s.add_subparsers(dest="token_cmd", required=True, metavar="ACTION")
    ad = ts.add_parser("add", help="make a token (printed once) for a program, e.g. a Prometheus scraper")
    ad.add_argument("name", metavar="NAME", help="what uses it: letters, digits and . _ @ -")
    ad.add_argument("--role", required=True, choices=["viewer", "operator", "admin"], help="what it may do")
    ad.set_defaults(func=cmd_add)
    rm = ts.add_parser("remove", help="revoke a token")
    rm.add_argument("name", metavar="NAME", help="the token to revoke")
    rm.set_defaults(func=cmd_remove)
    ls = ts.add_parser("list", help="the tokens' names and roles")
    ls.set_defaults(func=cmd_list)
    for sp in (ad, rm, ls):
        sp.add_argument("--config", "-c", metavar="FILE",
                        help="the node's configuration file (default: $DICOMNODE_CONFIG)")


def cmd_add(a: argparse.Namespace) -> int:
    from dicomnode.commands.user import _config_path
    from dicomnode.web.accounts import AccountFileError, set_account
    from dicomnode.web.settings import NAME_RE, new_token, token_sha256

    path = _config_path(a, "token add")
    if path is None:
        return 2
    if not NAME_RE.match(a.name):
        print(f"dicomnode token add: {a.name!r}: use 1 to 64 letters, digits and . _ @ -", file=sys.stderr)
        return 2
    token = new_token()
    try:
        replaced = set_account(path, "tokens", {"name": a.name, "role": a.role, "token_sha256": token_sha256(token)})
    except AccountFileError as e:
        print(f"dicomnode token add: {e}", file=sys.stderr)
        return 1
    print(token)
    print(f"{'renewed' if replaced else 'added'} API token {a.name} ({a.role}) in {path}; it is shown only now. A "
          "running node takes it at its next reload (SIGHUP or the console's Config page)", file=sys.stderr)
    return 0


def cmd_remove(a: argparse.Namespace) -> int:
    from dicomnode.commands.user import _config_path
    from dicomnode.web.accounts import AccountFileError, remove_account

    path = _config_path(a, "token remove")
    if path is None:
        return 2
    try:
        found = remove_account(path, "tokens", a.name)
    except AccountFileError as e:
        print(f"dicomnode token remove: {e}", file=sys.stderr)
        return 1
    if not found:
        print(f"dicomnode token remove: no token {a.name} in {path}", file=sys.stderr)
        return 1
    print(f"removed API token {a.name} from {path}")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from dicomnode.commands._common import config_or_exit
    from dicomnode.commands.user import _config_path

    path = _config_path(a, "token list")
    if path is None:
        return 2
    for t in config_or_exit(path).http.tokens:
        print(f"{t.name}\t{t.role.value}")
    return 0
