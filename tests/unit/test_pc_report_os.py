"""pc/report_os.py: the report it builds on this machine, the optional tools
(dmidecode, lshw) through stand-ins on PATH, and the POST to a real API on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import threading
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.unit


def _load_script():
    """The script as a PC runs it: one file on its own, not part of a package."""
    path = Path(__file__).resolve().parents[2] / "pc" / "report_os.py"
    spec = importlib.util.spec_from_file_location("report_os", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report_os = _load_script()


def _sys_macs() -> set[str]:
    out = set()
    for nic in Path("/sys/class/net").iterdir():
        try:
            mac = (nic / "address").read_text().strip().lower()
        except OSError:
            continue
        if mac and mac != "00:00:00:00:00:00":
            out.add(mac)
    return out


def test_report_of_this_machine(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no dmidecode, no lshw
    report = report_os.build_report()
    assert json.loads(json.dumps(report)) == report
    assert len(json.dumps(report)) <= report_os.MAX_BYTES
    assert report["version"] == report_os.VERSION
    assert report["cpu"]["threads"] == os.cpu_count()
    assert report["memory_bytes"] == psutil.virtual_memory().total
    assert report["os"]["system"] == "Linux"
    macs = {n["mac"] for n in report["nics"]}
    assert macs == _sys_macs()
    assert report["boot_mac"] in macs
    assert "lo" not in {n["name"] for n in report["nics"]}
    assert "/" in {d["mountpoint"] for d in report["disks"]}
    assert "dmi" not in report and "lshw" not in report


def _tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_dmidecode_and_lshw_when_present(tmp_path, monkeypatch):
    _tool(
        tmp_path,
        "dmidecode",
        'case "$2" in\n'
        "  system-manufacturer) echo 'ACME Corp' ;;\n"
        "  system-product-name) printf '# SMBIOS note\\nGamer 9000\\n' ;;\n"
        "  *) exit 1 ;;\n"
        "esac\n",
    )
    lshw = {
        "class": "system",
        "children": [
            {"class": "bus", "children": [
                {"class": "display", "product": "GeForce RTX 4070", "vendor": "NVIDIA"},
                {"class": "network", "product": "I225-V", "serial": "52:54:00:aa:bb:cc"},
                {"class": "bridge", "product": "not reported"},
            ]},
        ],
    }  # fmt: skip
    (tmp_path / "lshw.json").write_text(json.dumps(lshw))
    _tool(tmp_path, "lshw", f"/bin/cat {tmp_path / 'lshw.json'}\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    report = report_os.build_report()
    assert report["dmi"] == {
        "system-manufacturer": "ACME Corp",
        "system-product-name": "Gamer 9000",
    }
    assert report["lshw"] == [
        {"class": "display", "product": "GeForce RTX 4070", "vendor": "NVIDIA"},
        {"class": "network", "product": "I225-V", "mac": "52:54:00:aa:bb:cc"},
    ]


def test_oversized_report_is_shrunk():
    report = {"nics": [{"mac": "x"}] * 20, "lshw": [{"product": "x" * 1000}] * 100}
    small = report_os.shrink(report)
    assert "lshw" not in small and len(json.dumps(small)) <= report_os.MAX_BYTES


def test_report_reaches_the_api(tmp_path, monkeypatch):
    from werkzeug.serving import make_server

    from ggnet_api.app import create_app

    inv = tmp_path / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    ggnet_servers:\n      hosts:\n        boot1: {}\n"
        "    ggnet_clients:\n      hosts: {}\n"
    )
    app = create_app(
        {"state_dir": str(tmp_path / "state"), "inventory": str(inv), "background": False}
    )
    # Without an inventory the boot path registers nothing (every PC would look unknown).
    assert app.extensions["ggnet"].inventory.reload(), app.extensions["ggnet"].inventory.load_error
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("PATH", "/nonexistent")
        api = f"http://127.0.0.1:{server.server_port}"
        assert report_os.main(["--api", api, "--mac", "52-54-00-CC-00-01"]) == 0
        row = app.extensions["ggnet"].db.one(
            "SELECT * FROM discovered WHERE mac = '52:54:00:cc:00:01'"
        )
        sent = json.loads(row["report"])
        assert sent["cpu"]["threads"] == os.cpu_count()
        status, answer = report_os.send(api, "not-a-mac", {})
        assert status == 400 and "MAC address" in answer
    finally:
        server.shutdown()
        thread.join(5)
        app.extensions["ggnet"].close()
