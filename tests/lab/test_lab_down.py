"""`ggnet lab down` leaves no qemu process, tap or namespace.  Marked `lab_last`: the
conftest moves it behind every other test of the session, which share the VM."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def _lab_qemus(lab_dir: Path) -> list[int]:
    from ggnet_lab import process

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        argv = process.cmdline(int(proc.name))
        ours = argv and "qemu-system" in argv[0] and any(str(lab_dir) in a for a in argv)
        if ours and not process.is_zombie(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.lab_last
def test_down_leaves_nothing_behind(lab_vm):
    from ggnet_lab import cli, client, leases, netns, paths

    others = leases.holders()
    if others:
        pytest.skip(f"other sessions use the lab ({sorted(others)}); down would break them")
    # A PC left running on purpose must be stopped by down as well.
    pc = client.lab_pcs()["pc-bios"]
    result = client.boot(pc, until="bridge", timeout=90, keep=True, progress=print)
    assert result.reached
    assert client.pid("pc-bios") is not None
    assert _lab_qemus(paths.lab_dir())

    gone = cli.down()

    assert "vm boot1" in gone and "pc pc-bios" in gone
    assert _lab_qemus(paths.lab_dir()) == []
    assert not netns.exists()
    assert not Path("/var/run/netns/ggnet-lab").exists()
    assert client.running() == {}
