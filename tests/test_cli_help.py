"""CLI help is complete (issue 16, item 15): every command, sub-command, option and positional argument says what it
is; `--help` works for every command, `bench` included."""

from __future__ import annotations

import argparse

from helpers import run_cli
from dicomnode.cli import build_parser


def _parsers(p: argparse.ArgumentParser, path=()):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _parsers(sp, (*path, name))


def test_every_argument_has_help():
    missing = []
    for path, p in _parsers(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if isinstance(a, argparse._SubParsersAction):
                missing += [f"{' '.join((*path, c.dest))}" for c in a._choices_actions if not c.help]
                continue
            if not a.help:
                missing.append(f"{' '.join(path)} {a.option_strings or a.dest}")
    assert not missing, f"arguments without help: {missing}"


def test_help_of_every_command_exits_0(tmp_path):
    top = build_parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("bench", "serve", "status", "config", "destinations", "reprocess", "jobs", "exports"):
        assert name in commands
        p = run_cli(name, "--help", cwd=tmp_path)
        assert p.returncode == 0 and "usage: dicomnode" in p.stdout, (name, p.stderr)
    assert "ingest" in run_cli("bench", "--help", cwd=tmp_path).stdout
    assert run_cli("bench", "ingest", "--help", cwd=tmp_path).returncode == 0
