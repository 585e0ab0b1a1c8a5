"""The `ggnet` dispatcher: the lab is an optional part, and the product never loads it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from ggnet_cli import main

pytestmark = pytest.mark.unit


def test_commands_in_the_order_help_lists_them():
    assert list(main.commands()) == [
        "validate",
        "diff",
        "lab",
        "serve",
        "privd",
        "status",
        "images",
        "token",
        "job",
        "preflight",
    ]


def test_without_the_lab_package_there_is_no_lab_command(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "ggnet_lab" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert list(main.commands()) == [
        "validate",
        "diff",
        "serve",
        "privd",
        "status",
        "images",
        "token",
        "job",
        "preflight",
    ]
    with pytest.raises(SystemExit):
        main.build_parser().parse_args(["lab", "status"])


def test_the_api_and_the_engine_never_import_the_lab(tmp_path):
    code = (
        "import sys, ggnet.inventory, ggnet_api.app, ggnet_cli.preflight, ggnet_cli.validate\n"
        "ggnet_api.app.create_app({'state_dir': sys.argv[1], 'background': False})\n"
        "print(sorted(m for m in sys.modules if m.startswith('ggnet_lab')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "as_json"),
    [
        (["images", "--json", "boot-test", "win11", "v2"], True),
        (["images", "boot-test", "--json", "win11", "v2"], True),
        (["images", "boot-test", "win11", "v2"], False),
    ],
)
def test_images_json_before_or_after_the_action(argv, as_json):
    # argparse's subcommand default once overwrote the `ggnet images --json` before it.
    assert main.build_parser().parse_args(argv).json is as_json
