"""Write console accounts into the node's TOML file, keeping the rest of it (comments included) as it is.

``[[http.users]]`` and ``[[http.tokens]]`` blocks are appended at the end of the file, or replaced where they are
(an account of the same name). The file is written atomically (a temporary file renamed over it, its permissions
kept) and only if the result still passes ``dicomnode config check``; otherwise it is left untouched.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from pathlib import Path

from dicomnode.errors import ConfigError, DicomnodeError

_HEADER = re.compile(r"^\s*\[")


class AccountFileError(DicomnodeError):
    """The config file cannot take the account (unreadable, invalid before or after); the message says why."""


def _blocks(lines: list[str], table: str) -> list[tuple[int, int, dict]]:
    """(start, end, parsed) of every ``[[http.<table>]]`` block: from its header to the next header."""
    header = re.compile(rf"^\s*\[\[\s*http\s*\.\s*{table}\s*\]\]\s*(#.*)?$")
    out = []
    i = 0
    while i < len(lines):
        if header.match(lines[i]):
            j = i + 1
            while j < len(lines) and not _HEADER.match(lines[j]):
                j += 1
            try:
                parsed = tomllib.loads("".join(lines[i + 1:j]))
            except tomllib.TOMLDecodeError:
                parsed = {}
            out.append((i, j, parsed))
            i = j
        else:
            i += 1
    return out


def _kept(lines: list[str]) -> list[str]:
    """The blank and comment lines of a block: they may belong to the table that follows."""
    return [ln for ln in lines if not ln.strip() or ln.lstrip().startswith("#")]


def _block(table: str, fields: dict[str, str]) -> list[str]:
    return [f"[[http.{table}]]\n"] + [f"{k} = {json.dumps(v)}\n" for k, v in fields.items()]


def _write_checked(path: Path, text: str) -> None:
    from dicomnode.config import load_config
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        try:
            load_config(tmp)
        except ConfigError as e:
            raise AccountFileError(f"{path} would not be a valid configuration afterwards, so it was left as it "
                                   f"was:\n{e}") from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def set_account(path: Path | str, table: str, fields: dict[str, str]) -> bool:
    """Add or replace the ``[[http.<table>]]`` account named ``fields["name"]``; True if it replaced one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        tomllib.loads(text)
    except OSError as e:
        raise AccountFileError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise AccountFileError(f"{path} is not valid TOML ({e}); fix it first (`dicomnode config check`)") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    same = [b for b in _blocks(lines, table) if b[2].get("name") == fields["name"]]
    if same:
        start, end, _ = same[0]
        trailing = _kept(lines[start + 1:end])
        lines[start:end] = _block(table, fields) + trailing
    else:
        lines += ["\n"] + _block(table, fields)
    _write_checked(path, "".join(lines))
    return bool(same)


def remove_account(path: Path | str, table: str, name: str) -> bool:
    """Remove the ``[[http.<table>]]`` account ``name``; False if there was none."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    same = [b for b in _blocks(lines, table) if b[2].get("name") == name]
    if not same:
        return False
    start, end, _ = same[0]
    lines[start:end] = _kept(lines[start + 1:end])
    _write_checked(path, "".join(lines))
    return True
