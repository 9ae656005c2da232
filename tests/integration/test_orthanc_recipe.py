"""deploy/orthanc/README.md followed literally on Debian's own Orthanc configuration (issue 16, item 7).

The test copies Debian's /etc/orthanc (as installed by `apt-get install orthanc`) to a temporary folder and runs the
README's commands there: `install` of the Lua script, the key merge of orthanc.json, Orthanc started on the folder
(with the drop-in's TCP_NODELAY=1), the README's `curl` echo, the node configured from the README's TOML block,
`dicomnode config check` and `destinations test`, the README's `curl` upload loop; then the SEG and SR appear in the
same study, read over Orthanc's REST API without credentials (the recipe's localhost-only REST API).

What the test changes, and only that: paths (/etc/orthanc -> the copy), ports (free ones instead of 4242, 8042,
11112; 10.0.0.x -> 127.0.0.1), the storage folders, StableAge 2 s (the README says to lower it for faster
turn-around), and the node's quiet period and CT profile (a short one, with `extends`), so the test is quick.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, STS_CT, UserNode, free_port, run_cli, wait_for_port, wait_until

RECIPE = REPO / "deploy" / "orthanc"
README = (RECIPE / "README.md").read_text()
DEBIAN_ETC = Path("/etc/orthanc")
ORTHANC = Path("/usr/sbin/Orthanc")


def strip_json_comments(text: str) -> str:
    """Orthanc's configuration is JSON with // and /* */ comments (JsonCpp); drop them outside strings."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        ch = text[i]
        if in_str:
            out.append(ch)
            if ch == "\\":
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            out.append(ch)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def readme_command(pattern: str) -> str:
    m = re.search(r"`(" + pattern + r")`", README)
    assert m, f"the README no longer has a command matching {pattern!r}"
    return m.group(1)


def bash(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=300)


def rest_get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def ports():
    return {"http": free_port(), "dicom": free_port(), "node": free_port()}


def test_the_orthanc_recipe_as_written(tmp_path, ports):
    assert ORTHANC.exists() and (DEBIAN_ETC / "orthanc.json").exists(), "apt-get install -y orthanc"
    assert shutil.which("curl"), "apt-get install -y curl (README and .ci/run install it)"
    etc = tmp_path / "etc-orthanc"
    shutil.copytree(DEBIAN_ETC, etc)
    local = lambda cmd: cmd.replace("/etc/orthanc", str(etc)).replace("localhost:8042",  # noqa: E731
                                                                      f"127.0.0.1:{ports['http']}")

    # 1. the script (the systemd drop-in's only setting, TCP_NODELAY=1, goes into Orthanc's environment below)
    install = readme_command(r"install -m 0644 autoroute\.lua /etc/orthanc/dicomnode-autoroute\.lua")
    assert bash(local(install), RECIPE).returncode == 0
    dropin = (RECIPE / "tcp-nodelay.conf").read_text()
    assert "Environment=TCP_NODELAY=1" in dropin
    # 2. merge the keys of orthanc.json into Debian's /etc/orthanc/orthanc.json, as the README lists them
    fragment = json.loads((RECIPE / "orthanc.json").read_text())
    conf = json.loads(strip_json_comments((etc / "orthanc.json").read_text()))
    conf["DicomModalities"] = {**conf.get("DicomModalities", {}), **fragment["DicomModalities"]}
    conf["LuaScripts"] = [*conf.get("LuaScripts", []), *fragment["LuaScripts"]]
    for key in ("StableAge", "SyncStorageArea", "DicomCheckCalledAet", "RemoteAccessAllowed",
                "AuthenticationEnabled", "DicomAet", "DicomPort"):
        conf[key] = fragment[key]
    assert conf["RemoteAccessAllowed"] is False and conf["AuthenticationEnabled"] is False
    # this test's machine: free ports, its own storage, the node on loopback, a short StableAge
    conf["DicomModalities"]["dicomnode"].update(Host="127.0.0.1", Port=ports["node"])
    conf["LuaScripts"] = [local(x) for x in conf["LuaScripts"]]
    conf.update(HttpPort=ports["http"], DicomPort=ports["dicom"], StableAge=2,
                StorageDirectory=str(tmp_path / "orthanc-db"), IndexDirectory=str(tmp_path / "orthanc-db"))
    (etc / "orthanc.json").write_text(json.dumps(conf, indent=2))
    # 3. (re)start Orthanc: Debian's service runs `Orthanc /etc/orthanc/`
    log = open(tmp_path / "orthanc.log", "wb")
    orthanc = subprocess.Popen([str(ORTHANC), f"{etc}/"], stdout=log, stderr=subprocess.STDOUT,
                               env={"PATH": "/usr/bin:/bin", "TCP_NODELAY": "1"})
    node = None
    try:
        wait_for_port(ports["http"], timeout_s=60)
        wait_for_port(ports["dicom"], timeout_s=60)
        orthanc_log = lambda: (tmp_path / "orthanc.log").read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "dicomnode-autoroute: installed" in orthanc_log(), timeout_s=30, what="the Lua script")
        assert rest_get(ports["http"], "/system")["DicomAet"] == "ORTHANC"  # no credentials: no 401

        # 2. node side: the README's TOML, on this machine
        toml = re.search(r"## 2\. Node side.*?```toml\n(.*?)```", README, flags=re.S).group(1)
        toml = (toml.replace("10.0.0.10", "127.0.0.1").replace("port = 4242", f"port = {ports['dicom']}")
                .replace("port = 11112", f"port = {ports['node']}\nbind = \"127.0.0.1\"\n"
                                          f"data_dir = \"{tmp_path / 'node-data'}\""))
        toml += ('\n[series]\nquiet_seconds = 2\ncheck_interval_seconds = 0.2\n'
                 '[profiles.ct]\nextends = "ct"\nsteps = ["foreground", "measure"]\n')
        cfg = tmp_path / "dicomnode.toml"
        cfg.write_text(toml)
        check = run_cli("config", "check", cfg, cwd=tmp_path)
        assert check.returncode == 0, check.stderr
        node = UserNode(cfg, tmp_path, ports["node"]).start()
        back = run_cli("destinations", "test", "--config", cfg, cwd=tmp_path)
        assert back.returncode == 0 and "ORTHANC" in back.stdout and "OK" in back.stdout, back.stderr

        # 4. the README's echo from Orthanc to the node
        echo_cmd = readme_command(r"curl -f -X POST http://localhost:8042/modalities/dicomnode/echo -d '\{\}'")
        echo = bash(local(echo_cmd), tmp_path)
        assert echo.returncode == 0, echo.stderr

        # 3. try it: the README's upload loop, from a folder holding `series/`
        (tmp_path / "series").symlink_to(STS_CT)
        upload = bash(local(readme_command(r"for f in series/\*\.dcm; do curl [^`]*; done")), tmp_path)
        assert upload.returncode == 0, upload.stderr
        import pydicom
        study_uid = str(pydicom.dcmread(next(STS_CT.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)

        def results_in_orthanc():
            found = [x for x in rest_get(ports["http"], "/studies?expand")
                     if x["MainDicomTags"]["StudyInstanceUID"] == study_uid]
            if not found:
                return None
            mods = {rest_get(ports["http"], f"/series/{s}")["MainDicomTags"].get("Modality")
                    for s in found[0]["Series"]}
            return mods if {"SEG", "SR"} <= mods else None
        mods = wait_until(results_in_orthanc, timeout_s=300, what="SEG and SR back in Orthanc")
        assert mods == {"CT", "SEG", "SR"}
        assert "dicomnode-autoroute: sending series" in orthanc_log()
        # once stable, its own SEG and SR are not sent back: no loop
        wait_until(lambda: orthanc_log().count("not sending series") >= 2, timeout_s=60, what="no loop")
    finally:
        if node is not None:
            node.stop()
        orthanc.terminate()
        try:
            orthanc.wait(30)
        except subprocess.TimeoutExpired:
            orthanc.kill()
        log.close()
