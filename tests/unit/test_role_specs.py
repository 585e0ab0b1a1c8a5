"""Each role's meta/argument_specs.yml documents exactly its defaults/main.yml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROLES = sorted((Path(__file__).resolve().parents[2] / "roles").iterdir())


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_follow_the_defaults(role):
    defaults = _load(role / "defaults" / "main.yml")
    options = _load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(set(defaults) - set(options)) == [], "defaults missing from the spec"
    for name, spec in options.items():
        if name in defaults:
            assert spec.get("default") == defaults[name], name
        else:  # an input the role does not default: the inventory's or the playbook's
            assert "default" not in spec, name


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_internal_variables_carry_a_leading_underscore(role):
    internal = _load(role / "vars" / "main.yml") if (role / "vars").exists() else {}
    assert [name for name in internal if not name.startswith(f"_{role.name}_")] == []
