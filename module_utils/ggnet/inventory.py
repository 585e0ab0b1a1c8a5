"""Load an inventory into plain data with Ansible's own machinery.

InventoryManager and VariableManager decide what each host sees, so group_vars,
host_vars and their precedence are exactly what a playbook run would use.  Values are
templated one leaf at a time: a leaf that cannot be resolved (an undefined vault
variable, a failing lookup) becomes a Problem instead of hiding every other value.

Ansible is imported inside load_inventory() only, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .settings import CLIENTS_GROUP, SERVERS_GROUP, is_secret_key
from .validate import UNRESOLVED, Problem, plain, role_knobs, validate

# The repository this engine is part of (<repo>/module_utils/ggnet): its ansible.cfg
# applies to every load, and its playbooks, roles and inventories sit beside it.
REPO_ROOT = Path(__file__).resolve().parents[2]

# Variables Ansible adds to every host; they are not part of the inventory.
_MAGIC_VARS = frozenset(
    {
        "ansible_config_file",
        "ansible_facts",
        "ansible_playbook_python",
        "ansible_version",
        "group_names",
        "groups",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "playbook_dir",
        "omit",
        "hostvars",
        "role_names",
        "ansible_check_mode",
        "ansible_diff_mode",
        "ansible_forks",
        "ansible_inventory_sources",
        "ansible_run_tags",
        "ansible_skip_tags",
        "ansible_verbosity",
        "ansible_dependent_role_names",
        "ansible_play_role_names",
        "ansible_role_names",
    }
)

# Keys whose values are never shown, not even in an error message.
_YAML_SUFFIXES = {".yml", ".yaml", ".json", ""}


class InventoryError(Exception):
    """The inventory cannot be read at all (missing, YAML that does not parse)."""


@dataclass
class Inventory:
    path: Path
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every group with every host in it (transitively), as ansible's `groups` var.
    groups: dict[str, list[str]] = field(default_factory=dict)
    # Every host's inventory variables, templated (servers, clients and others).
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)
    # host -> dotted key -> "file:line" where the value was declared.
    origins: dict[str, dict[str, str]] = field(default_factory=dict)
    # Values that could not be resolved while loading.
    problems: list[Problem] = field(default_factory=list)


def _use_repo_config() -> None:
    # The CLI may run from any directory; the repo's ansible.cfg (unparsed inventories
    # fail, module and plugin paths) must apply anyway.  An explicit choice wins.
    if "ANSIBLE_CONFIG" not in os.environ and (REPO_ROOT / "ansible.cfg").is_file():
        os.environ["ANSIBLE_CONFIG"] = str(REPO_ROOT / "ansible.cfg")


class _TolerantLoader(yaml.SafeLoader):
    """SafeLoader that accepts Ansible's own tags (!vault, !unsafe) as opaque strings."""


def _opaque(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    assert isinstance(node, yaml.MappingNode)  # YAML's third and last kind of node
    return loader.construct_mapping(node)


_TolerantLoader.add_multi_constructor("!", lambda loader, _suffix, node: _opaque(loader, node))


def _yaml_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        rel = path.relative_to(root)
        in_vars_dir = rel.parts[0] in ("group_vars", "host_vars")
        if path.suffix in _YAML_SUFFIXES and (in_vars_dir or path.suffix):
            files.append(path)
    return files


def check_yaml(root: Path) -> None:
    """Raise InventoryError naming file and line for the first file that does not parse.

    Ansible reports such files as a whole-inventory failure without a line number, and
    warns once per inventory plugin it tried; parsing first gives one precise message.
    """
    for path in _yaml_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InventoryError(f"{path}: cannot read: {exc}") from exc
        if text.lstrip().startswith("$ANSIBLE_VAULT"):
            continue  # a vault-encrypted file; Ansible decrypts and parses it
        if path.suffix == "" and path.parent == root:
            continue  # an extension-less file at the top may be INI
        try:
            yaml.load(text, Loader=_TolerantLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = str(exc.problem or "")
            if exc.context:
                # The context (an unclosed bracket, say) often starts lines earlier.
                started = (
                    f" (started at line {exc.context_mark.line + 1})" if exc.context_mark else ""
                )
                what = f"{exc.context}{started}: {what}"
            raise InventoryError(f"{where}: YAML does not parse: {what}") from exc
        except yaml.YAMLError as exc:
            raise InventoryError(f"{path}: YAML does not parse: {exc}") from exc


def origin_of(value: Any, root: Path | None = None) -> str | None:
    """'file:line' where a value was declared, if Ansible tagged it (ansible-core >= 2.19)."""
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # older ansible-core: no provenance, problems are per host
        return None
    tag = Origin.get_tag(value)
    if tag is None or not tag.path:
        return None
    path = tag.path
    if root is not None:
        with contextlib.suppress(ValueError):
            path = str(Path(path).relative_to(root))
    return f"{path}:{tag.line_num}" if tag.line_num else path


def collect_origins(raw: dict[str, Any], root: Path | None) -> dict[str, str]:
    """Dotted key -> origin, for top-level keys and one level of nested dict keys."""
    found: dict[str, str] = {}
    for key, value in raw.items():
        where = origin_of(value, root)
        if where:
            found[key] = where
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                sub_where = origin_of(subvalue, root) or where
                if sub_where:
                    found[f"{key}.{sub}"] = sub_where
    return found


def template_leaves(templar: Any, value: Any, key: str, host: str, problems: list[Problem]) -> Any:
    """Template each leaf of value; a leaf that fails becomes UNRESOLVED plus a Problem."""
    from ansible.errors import AnsibleError

    if isinstance(value, dict):
        return {
            str(k): template_leaves(templar, v, f"{key}.{k}", host, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            template_leaves(templar, v, f"{key}[{i}]", host, problems) for i, v in enumerate(value)
        ]
    try:
        return plain(templar.template(value))
    except AnsibleError as exc:
        shown = "(hidden)" if is_secret_key(key) else _short(value)
        reason = _first_line(getattr(exc, "message", None) or str(exc))
        problems.append(Problem(host, key, shown, f"cannot be resolved: {reason}", origin=None))
        return UNRESOLVED


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _forget_vars_file_cache() -> None:
    """Ansible's host_group_vars plugin remembers, for the life of the process, which
    host_vars/group_vars files exist (FOUND) and which directories were missing (NAK).
    ansible-playbook loads an inventory once; a long-running caller (the API reloads
    after every change, approval adds host_vars/<name>.yml) must see files added since,
    so every load starts from an empty cache.  The plugin has no API for this."""
    try:
        from ansible.plugins.vars import host_group_vars
    except ImportError:  # pragma: no cover - ansible-core without the plugin
        return
    getattr(host_group_vars, "FOUND", {}).clear()
    getattr(host_group_vars, "NAK", set()).clear()


def _init_plugins(init_plugin_loader) -> None:
    # Lookups (env, password) need the collection loader; it may be set up only once
    # per process, and inside ansible-playbook it already is.
    if not any(type(f).__name__ == "_AnsibleCollectionFinder" for f in sys.meta_path):
        init_plugin_loader([])


def load_inventory(
    path: str | os.PathLike[str],
    *,
    vault_password_files: list[str] | None = None,
) -> Inventory:
    """Load an inventory directory or file into plain, templated data.

    Raises InventoryError when the inventory cannot be read at all.  Values that cannot
    be templated are reported in Inventory.problems and set to UNRESOLVED.
    """
    root = Path(path).resolve()
    if not root.exists():
        raise InventoryError(f"{root}: inventory not found")
    check_yaml(root)

    _use_repo_config()
    from ansible import constants as C
    from ansible.cli import CLI
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    _init_plugins(init_plugin_loader)
    _forget_vars_file_cache()
    loader = DataLoader()
    password_files = list(vault_password_files or [])
    if C.DEFAULT_VAULT_PASSWORD_FILE and not password_files:
        password_files = [C.DEFAULT_VAULT_PASSWORD_FILE]
    if password_files or C.DEFAULT_VAULT_IDENTITY_LIST:
        secrets = CLI.setup_vault_secrets(
            loader,
            vault_ids=C.DEFAULT_VAULT_IDENTITY_LIST,
            vault_password_files=password_files,
            ask_vault_pass=False,
        )
        loader.set_vault_secrets(secrets)

    inventory = Inventory(path=root)
    base = root if root.is_dir() else root.parent
    try:
        manager = InventoryManager(loader=loader, sources=[str(root)])
        variables = VariableManager(loader=loader, inventory=manager)
        inventory.groups = {
            name: sorted(h.name for h in group.get_hosts())
            for name, group in manager.groups.items()
        }
        for host in sorted(manager.get_hosts(), key=lambda h: h.name):
            raw = variables.get_vars(host=host, include_hostvars=False)
            templar = Templar(loader=loader, variables=raw)
            own = {k: v for k, v in raw.items() if k not in _MAGIC_VARS}
            inventory.origins[host.name] = collect_origins(own, base)
            inventory.hostvars[host.name] = {
                key: template_leaves(templar, value, key, host.name, inventory.problems)
                for key, value in own.items()
            }
    except AnsibleError as exc:
        raise InventoryError(f"{root}: {_first_line(getattr(exc, 'message', str(exc)))}") from exc

    for name in inventory.groups.get(SERVERS_GROUP, []):
        inventory.servers[name] = inventory.hostvars[name]
    for name in inventory.groups.get(CLIENTS_GROUP, []):
        inventory.clients[name] = inventory.hostvars[name]
    for problem in inventory.problems:
        problem.origin = inventory.origins.get(problem.where, {}).get(problem.key.split("[")[0])
    return inventory


def check(
    path: str | os.PathLike[str],
    vault_password_files: list[str] | None = None,
    roles_dir: str | os.PathLike[str] | None = None,
) -> tuple[Inventory | None, list[str], list[Problem]]:
    """Load and validate a whole inventory, knowing the role knobs of `roles_dir` (by
    default this checkout's; an installed engine has none beside it, so a boot server
    names its code's): (inventory or None when it does not load, problems as lines,
    the Problems)."""
    try:
        inventory = load_inventory(path, vault_password_files=vault_password_files)
    except InventoryError as exc:
        return None, [str(exc)], []
    roles = REPO_ROOT / "roles" if roles_dir is None else Path(roles_dir)
    problems = validate(inventory, extra_keys=role_knobs(roles))
    return inventory, [str(p) for p in problems], problems
