"""The lab tier's shared fixtures.  One boot-server VM per pytest session: booting it
costs ~30-45 s under TCG, so every lab test (this project's and other engineers') asks
for `lab_vm` and gets the same running VM."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab_last: runs after every other test (it takes the shared lab down)"
    )


def pytest_collection_modifyitems(session, config, items):
    # Stable: everything else keeps its order, lab_last tests go to the very end.
    items.sort(key=lambda item: item.get_closest_marker("lab_last") is not None)


@dataclass(frozen=True)
class LabVM:
    """Handle on the running boot server."""

    name: str
    address: str
    boot_to_ssh: float | None  # seconds, None if the VM was already up

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        from ggnet_lab import vm

        return vm.ssh(command, timeout=timeout)

    def check(self, command: str, timeout: float = 120) -> str:
        """Run COMMAND in the VM; fail the test with its output unless it exits 0."""
        proc = self.ssh(command, timeout)
        assert proc.returncode == 0, (
            f"in {self.name}: `{command}` exited {proc.returncode}\n{proc.stdout}{proc.stderr}"
        )
        return proc.stdout


@pytest.fixture(scope="session")
def lab_vm() -> LabVM:
    """The lab up (namespace, bridge, boot1 answering ssh); torn down after the session
    unless another session still holds a lease on it or GGNET_LAB_KEEP=1 (handy while
    writing tests: the next run reuses it)."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, taps)")
    from ggnet_lab import cli, leases, vm

    # The lease first: a concurrent session's teardown must see this one.
    leases.take()
    try:
        timings = cli.up()
        yield LabVM(vm.NAME, vm.ADDRESS, timings.get("boot_to_ssh"))
    finally:
        leases.release()
        if os.environ.get("GGNET_LAB_KEEP") != "1" and not leases.holders():
            cli.down()
