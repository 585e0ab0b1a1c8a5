"""The code the ggnet_api role ships to a server holds every package the server imports.

The server has no checkout: a package the API, the CLI or privd imports but the role
leaves out is found only when a service fails to start (ggnet_privd once was)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ROLE_VARS = yaml.safe_load((ROOT / "roles/ggnet_api/vars/main.yml").read_text())


def _shipped_names() -> set[str]:
    # module_utils/ggnet is installed under its import name, ggnet.
    return {Path(p).name for p in ROLE_VARS["_ggnet_api_packages_paths"]}


def _imported_ggnet_packages(package: Path) -> dict[str, str]:
    """Top-level ggnet* packages imported anywhere in a package (lazy imports too),
    each with one file that imports it."""
    found: dict[str, str] = {}
    for source in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top.startswith("ggnet"):
                    found.setdefault(top, str(source.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", sorted(_shipped_names() - {"ggnet"}))
def test_every_package_a_shipped_package_imports_is_shipped(package):
    imported = _imported_ggnet_packages(ROOT / package)
    missing = {name: where for name, where in imported.items() if name not in _shipped_names()}
    # ggnet_lab and the test support are controller-side only, never imported on a server.
    missing.pop("ggnet_lab", None)
    assert not missing, f"imported on the server but not shipped by the role: {missing}"


def test_the_shipped_packages_travel_in_the_code_copy_too():
    # A converge run on the server (an API job) bundles the packages from its code copy.
    code = set(ROLE_VARS["_ggnet_api_code_paths"])
    for path in ROLE_VARS["_ggnet_api_packages_paths"]:
        assert path.split("/")[0] in code, path


def test_the_consoles_vendored_libraries_are_checked_and_node_modules_left_out():
    # The console's htmx is gitignored (npm ci builds it): the role refuses to ship an
    # API without it, and the bundles never carry node_modules (axe-core, tests only).
    tasks = (ROOT / "roles/ggnet_api/tasks/install.yml").read_text()
    for path in ROLE_VARS["_ggnet_api_web_vendor_files"]:
        assert path.startswith("ggnet_api/web/static/vendor/"), path  # the package serves it
    assert "_ggnet_api_web_vendor_files" in tasks
    assert tasks.count("'--exclude=node_modules'") == 2
