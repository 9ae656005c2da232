"""README's two commands (issue 16, item 16): they work on Debian's own Python (PEP 668: a venv, no system-wide pip
install) and `.ci/run` runs exactly the test command."""

from __future__ import annotations

import re
import shlex

from helpers import REPO


def _quick_start_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Quick start"):text.index("## Using it")]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, flags=re.S)]


def _parts(command: str) -> list[list[str]]:
    return [shlex.split(p) for p in command.split("&&")]


def test_two_commands_each_making_or_using_a_venv():
    run, test = _quick_start_commands()
    for command in (run, test):
        parts = _parts(command)
        assert ["python3", "-m", "venv", ".venv"] in parts, command
        pips = [p for p in parts if "pip" in p[0] or p[:3] == ["python3", "-m", "pip"]]
        assert pips and all(p[0] == ".venv/bin/pip" for p in pips), "pip only inside the venv (PEP 668)"
        apt = next(p for p in parts if p[:2] == ["apt-get", "install"])
        assert "python3-venv" in apt  # Debian ships venv separately
    assert _parts(run)[-1] == [".venv/bin/dicomnode", "serve"]
    assert _parts(test)[-1][:3] == [".venv/bin/python", "-m", "pytest"]


def test_ci_runs_the_readme_test_command():
    (_, test) = _quick_start_commands()
    parts = _parts(test)
    ci = (REPO / ".ci" / "run").read_text()
    ci_lines = [shlex.split(ln.split("#")[0]) for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    apt_readme = next(p for p in parts if p[:2] == ["apt-get", "install"])
    apt_ci = next(ln for ln in ci_lines if "apt-get" in ln and "install" in ln)
    def pkgs(argv: list[str]) -> set[str]:
        return {a for a in argv if not a.startswith("-") and a not in ("apt-get", "install", "$SUDO")}
    assert pkgs(apt_readme) == pkgs(apt_ci)
    rest = [p for p in parts if p[0] != "apt-get"]
    flat = [ln for ln in ci_lines if ln and ln[0] != "$SUDO" and "apt-get" not in ln]
    loud = lambda argv: [a for a in argv if a != "-q"]  # noqa: E731 - CI may install quietly
    for step in rest:  # the venv, the install and pytest, in this order
        assert [ln for ln in flat if loud(ln) == loud(step)], f"{shlex.join(step)} is not in .ci/run"
    order = [next(i for i, ln in enumerate(flat) if loud(ln) == loud(step)) for step in rest]
    assert order == sorted(order)
