"""ggnet's API, CLI and the glue between the inventory and module_utils (`ggnet`)."""

from pathlib import Path

# The repository root: playbooks, roles and inventories are found relative to it.
REPO_ROOT = Path(__file__).resolve().parent.parent
