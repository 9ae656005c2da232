"""Start-up errors: one line naming the key and the fix, exit 2, nothing created (issue 16, item 3); the same
checks in `config check --runtime`; `serve --port/--aet/--bind/--data-dir` override the file (item 15)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import tomli_w

from helpers import UserNode, free_port, run_cli, wait_for_port


def _cfg(tmp_path: Path, **node) -> Path:
    cfg = tmp_path / "node.toml"
    cfg.write_text(tomli_w.dumps({"node": {"bind": "127.0.0.1", "port": free_port(),
                                           "data_dir": str(tmp_path / "data"), **node}}))
    return cfg


def _one_line(p, *words: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_port_in_use_is_one_line_and_creates_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = _cfg(tmp_path, port=port)
        p = run_cli("serve", "--config", cfg, cwd=tmp_path, timeout=120)
        line = _one_line(p, "node.port", str(port), "in use", "serve --port")
        assert not (tmp_path / "data").exists(), "the data folder was created before the checks passed"
        r = run_cli("config", "check", "--runtime", cfg, cwd=tmp_path)
        assert r.returncode == 2 and "node.port" in r.stderr and "in use" in r.stderr, r.stderr
        assert not (tmp_path / "data").exists()
    assert line.startswith("dicomnode serve: node.port")


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    cfg = _cfg(tmp_path)
    _one_line(run_cli("serve", "--config", cfg, cwd=tmp_path), "node.data_dir", "is a file", "give a folder")
    sub = _cfg(tmp_path, data_dir=str(tmp_path / "data" / "inside"))
    _one_line(run_cli("serve", "--config", sub, cwd=tmp_path), "node.data_dir", "is a file")
    r = run_cli("config", "check", "--runtime", cfg, cwd=tmp_path)
    assert r.returncode == 2 and "node.data_dir" in r.stderr


def test_read_only_data_dir(tmp_path):
    # /proc/sys: a read-only folder on every Linux machine (root included; chmod does not stop root)
    cfg = _cfg(tmp_path, data_dir="/proc/sys")
    _one_line(run_cli("serve", "--config", cfg, cwd=tmp_path), "node.data_dir", "not writable")
    cfg = _cfg(tmp_path, data_dir="/proc/sys/dicomnode-data")
    _one_line(run_cli("serve", "--config", cfg, cwd=tmp_path), "node.data_dir", "cannot be created", "/proc/sys")
    r = run_cli("config", "check", "--runtime", cfg, cwd=tmp_path)
    assert r.returncode == 2 and "not writable" in r.stderr
    ok = run_cli("config", "check", "--runtime", _cfg(tmp_path), cwd=tmp_path)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    assert not (tmp_path / "data").exists()


def test_serve_options_override_the_file(tmp_path):
    cfg = _cfg(tmp_path)
    port = free_port()
    node = UserNode(cfg, tmp_path, port, "--port", str(port), "--aet", "OVERRIDE", "--data-dir", "elsewhere",
                    "--log-level", "warning")
    node.start()
    try:
        wait_for_port(port)
        echo = run_cli("echo", "127.0.0.1", str(port), "--aec", "OVERRIDE", cwd=tmp_path)
        assert echo.returncode == 0, echo.stderr
        assert (tmp_path / "elsewhere" / "index.sqlite").exists() and not (tmp_path / "data").exists()
    finally:
        assert node.stop() == 0
    assert "node started" not in node.log()  # --log-level warning
    bad = run_cli("serve", "--config", cfg, "--aet", "A" * 17, cwd=tmp_path)
    assert bad.returncode == 2 and "--aet" in bad.stderr


def test_first_start_logs_no_alarm_and_states_the_quiet_period(tmp_path):
    port = free_port()
    cfg = tmp_path / "n.toml"
    cfg.write_text(tomli_w.dumps({"node": {"bind": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "d"),
                                           "log_format": "json"},
                                  "series": {"quiet_seconds": 12},
                                  "rules": [{"name": "ct", "match": {"Modality": "CT"}, "quiet_seconds": 5}]}))
    node = UserNode(cfg, tmp_path, port).start()
    assert node.stop() == 0
    recs = [json.loads(x) for x in node.log().splitlines() if x.strip()]
    assert not [r for r in recs if r.get("clean_shutdown") is False]
    assert any(r["msg"].startswith("first start") for r in recs)
    started = next(r for r in recs if r["msg"] == "node started")
    assert started["quiet_seconds"] == 12 and started["rules_quiet_seconds"] == {"ct": 5}
    node.start()
    assert node.stop() == 0
    recs = [json.loads(x) for x in node.log().splitlines() if x.strip()]
    assert [r for r in recs if r["msg"] == "recovered" and r["clean_shutdown"] is True]
    assert all(r["level"] != "warning" for r in recs)

    # status --watch prints again and again until Ctrl-C (one JSON object per line with --json)
    import signal
    import subprocess
    from helpers import dicomnode_exe
    w = subprocess.Popen([dicomnode_exe(), "status", "--watch", "0.2", "--json", "--config", str(cfg)],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [w.stdout.readline() for _ in range(3)]
    w.send_signal(signal.SIGINT)
    assert w.wait(30) == 0, w.stderr.read()
    assert [json.loads(x)["node"]["quiet_seconds"] for x in lines] == [12, 12, 12]
