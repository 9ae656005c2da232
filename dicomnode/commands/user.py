"""``dicomnode user add|remove|list``: the console's accounts, in the node's TOML file (``[[http.users]]``).

``add NAME --role viewer|operator|admin`` asks for the password twice (or reads one line from standard input with
``--password-stdin``) and writes its scrypt hash, never the password; an account of that name is replaced (a new
password, a new role). A running node takes the change at its next reload (SIGHUP, or the console's reload).
Exit codes: 0 done; 1 the file could not be changed (named, left as it was); 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys


def _config_path(a: argparse.Namespace, command: str) -> str | None:
    path = a.config or os.environ.get("DICOMNODE_CONFIG")
    if not path:
        print(f"dicomnode {command}: give the node's configuration file with --config FILE (or $DICOMNODE_CONFIG): "
              "the account is written into it", file=sys.stderr)
    return path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("user", help="console accounts: add (or change), remove, list",
                              description="Accounts of the web console, kept in the node's TOML file as "
                                          "[[http.users]] with a scrypt password hash. Roles: viewer (read), "
                                          "operator (retry, requeue, reprocess, force completion, echo), admin "
                                          "(reload the configuration).")
    us = s.add_subparsers(dest="user_cmd", required=True, metavar="ACTION")
    ad = us.add_parser("add", help="add an account, or set a new password and role for one",
                       description="Add the account NAME (or replace its password and role) in the config file.")
    ad.add_argument("name", metavar="NAME", help="the login name: letters, digits and . _ @ -")
    ad.add_argument("--role", required=True, choices=["viewer", "operator", "admin"], help="what the account may do")
    ad.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    ad.set_defaults(func=cmd_add)
    rm = us.add_parser("remove", help="remove an account")
    rm.add_argument("name", metavar="NAME", help="the account to remove")
    rm.set_defaults(func=cmd_remove)
    ls = us.add_parser("list", help="the accounts and their roles")
    ls.set_defaults(func=cmd_list)
    for sp in (ad, rm, ls):
        sp.add_argument("--config", "-c", metavar="FILE",
                        help="the node's configuration file (default: $DICOMNODE_CONFIG)")


def _read_password(a: argparse.Namespace) -> str | None:
    if a.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass
    first = getpass.getpass(f"password for {a.name}: ")
    if getpass.getpass("again: ") != first:
        print("dicomnode user add: the passwords differ; nothing written", file=sys.stderr)
        return None
    return first


def cmd_add(a: argparse.Namespace) -> int:
    from dicomnode.web.accounts import AccountFileError, set_account
    from dicomnode.web.settings import NAME_RE, hash_password

    path = _config_path(a, "user add")
    if path is None:
        return 2
    if not NAME_RE.match(a.name):
        print(f"dicomnode user add: {a.name!r}: use 1 to 64 letters, digits and . _ @ -, starting with a letter or "
              "digit", file=sys.stderr)
        return 2
    password = _read_password(a)
    if password is None:
        return 2
    if len(password) < 8:
        print("dicomnode user add: the password is shorter than 8 characters; nothing written", file=sys.stderr)
        return 2
    try:
        replaced = set_account(path, "users", {"name": a.name, "role": a.role,
                                               "password_hash": hash_password(password)})
    except AccountFileError as e:
        print(f"dicomnode user add: {e}", file=sys.stderr)
        return 1
    print(f"{'updated' if replaced else 'added'} console account {a.name} ({a.role}) in {path}; a running node "
          "takes it at its next reload (SIGHUP or the console's Config page)")
    return 0


def cmd_remove(a: argparse.Namespace) -> int:
    from dicomnode.web.accounts import AccountFileError, remove_account

    path = _config_path(a, "user remove")
    if path is None:
        return 2
    try:
        found = remove_account(path, "users", a.name)
    except AccountFileError as e:
        print(f"dicomnode user remove: {e}", file=sys.stderr)
        return 1
    if not found:
        print(f"dicomnode user remove: no account {a.name} in {path}", file=sys.stderr)
        return 1
    print(f"removed console account {a.name} from {path}")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from dicomnode.commands._common import config_or_exit

    path = _config_path(a, "user list")
    if path is None:
        return 2
    cfg = config_or_exit(path)
    for u in cfg.http.users:
        print(f"{u.name}\t{u.role.value}")
    return 0
