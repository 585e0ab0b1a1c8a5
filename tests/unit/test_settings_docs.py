"""docs/inventory.md and the settings model say the same: keys and defaults.

The docs' tables are what an operator reads; ggnet.settings is what runs.  A default
changed in one place only fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ggnet import settings

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "inventory.md"
# Cells are split at pipes that are not escaped: a type column says `zvol` \| `file`.
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_KEY = re.compile(r"^`([^`]+)`$")
_FIRST_CODE = re.compile(r"^\s*`([^`]+)`")


def tables(text: str) -> dict[str, dict[str, str]]:
    """{heading: {key: default column}} of every table under a markdown heading."""
    found: dict[str, dict[str, str]] = {}
    heading = ""
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip().strip("`")
        elif line.startswith("|"):
            cells = [cell.strip() for cell in _CELL_SPLIT.split(line)[1:-1]]
            if len(cells) >= 3 and (key := _KEY.match(cells[0])):
                found.setdefault(heading, {})[key.group(1)] = cells[2]
    return found


NO_DEFAULT = object()
DERIVED = object()


def documented_default(column: str) -> object:
    """The default a table cell states: a literal in backquotes, derived from another
    value (`/<pool>`), or none at all (required, optional, null)."""
    match = _FIRST_CODE.match(column)
    if not match:
        return NO_DEFAULT
    if "<" in match.group(1):
        return DERIVED
    return yaml.safe_load(match.group(1))


def mismatches(doc: dict[str, str], defaults: dict[str, object], keys) -> list[str]:
    wrong = []
    for key in sorted(set(doc) | set(keys)):
        if key not in doc:
            wrong.append(f"{key}: in the model, not in the docs")
            continue
        stated = documented_default(doc[key])
        actual = defaults.get(key)
        if stated is DERIVED:
            if key in defaults:
                wrong.append(f"{key}: the docs derive it, the model sets {actual!r}")
        elif stated is NO_DEFAULT:
            if actual is not None:
                wrong.append(f"{key}: the docs give no default, the model has {actual!r}")
        elif stated != actual or type(stated) is not type(actual):
            wrong.append(f"{key}: the docs say {stated!r}, the model {actual!r}")
    return wrong


@pytest.fixture(scope="module")
def doc_tables() -> dict[str, dict[str, str]]:
    return tables(DOC.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("section", "keys"),
    [
        ("ggnet_network", settings.NETWORK_KEYS),
        ("ggnet_storage", settings.STORAGE_KEYS),
        ("ggnet_iscsi", settings.ISCSI_KEYS),
        ("ggnet_rollout", settings.ROLLOUT_KEYS),
        ("ggnet_boot_test", settings.BOOT_TEST_KEYS),
    ],
)
def test_server_settings_match_the_model(doc_tables, section, keys):
    assert mismatches(doc_tables[section], settings.DEFAULTS[section], keys) == []


def test_client_defaults_match_the_model(doc_tables):
    doc = doc_tables["Client variables (host vars or machine-group vars)"]
    assert mismatches(doc, settings.CLIENT_DEFAULTS, settings.CLIENT_KEYS) == []


def test_image_keys_match_the_model(doc_tables):
    assert set(doc_tables["ggnet_images"]) == settings.IMAGE_KEYS


def test_a_changed_default_is_caught():
    doc = {"pool": "`ggpool`", "disk_format": "`file`", "mountpoint": "`/<pool>`"}
    wrong = mismatches(doc, {"pool": "ggpool", "disk_format": "zvol"}, ())
    assert wrong == ["disk_format: the docs say 'file', the model 'zvol'"]


def test_node_group_keys_match_the_model(doc_tables):
    doc = doc_tables["Node groups"]
    assert mismatches(doc, settings.NODE_GROUP_DEFAULTS, settings.NODE_GROUP_KEYS) == []
