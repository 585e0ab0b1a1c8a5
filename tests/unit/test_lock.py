"""The Python lock covers pyproject.toml: every dependency pinned, allowed, hashed.

The bootstrap installs only from requirements/dev.lock (`--require-hashes`), so a
dependency added to pyproject.toml without `make lock` would be missing on a fresh
machine; this says so in a second instead of after a bootstrap.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def locked(name: str = "dev.lock") -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes)."""
    text = (REPO / "requirements" / name).read_text()
    pins: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9._-]+)==([^\s\\;]+)", block)
        if head:
            pins[canonicalize_name(head.group(1))] = (head.group(2), block.count("--hash="))
    return pins


def test_every_dependency_is_locked_at_an_allowed_version_with_hashes():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # dev takes the other extras in (ggnet[tracing]): every extra's packages are locked.
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *(spec for group in extras.values() for spec in group)]
    pins = locked()
    problems = []
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        if name == canonicalize_name(project["name"]):
            assert set(spec.extras) <= set(extras), f"{spec}: no such extra"
            continue
        if name not in pins:
            problems.append(f"{spec}: not in requirements/dev.lock (run `make lock`)")
            continue
        version, hashes = pins[name]
        if not spec.specifier.contains(version, prereleases=True):
            problems.append(f"{spec}: locked at {version} (run `make lock`)")
        if hashes == 0:
            problems.append(f"{name}=={version}: no hashes in the lock")
    assert problems == [], "\n".join(problems)


def test_every_locked_package_has_hashes():
    assert all(hashes for _, hashes in locked().values())
    assert len(locked()) > 50  # the parser still reads the lock's format


def test_a_boot_server_runs_jobs_with_the_versions_the_tests_ran():
    dev, server = locked(), locked("server-jobs.lock")
    assert {"ansible-core", "ansible-runner"} <= server.keys()
    differ = {
        n: (v, dev.get(n, ("absent",))[0])
        for n, (v, _) in server.items()
        if n != "pip" and dev.get(n, ("",))[0] != v  # pip: the server's installer
    }
    assert differ == {}, f"server-jobs.lock vs dev.lock (run `make lock`): {differ}"
    assert all(hashes for _, hashes in server.values())
