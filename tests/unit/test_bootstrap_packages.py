"""Every program and qemu module the code and tests call comes from the bootstrap's list.

A package installed by hand once kept CI green on one machine while a bare machine
failed (qemu's iSCSI driver lives in qemu-block-extra).  This test reads the
programs named in the code (argv lists, subprocess calls, `shutil.which`, command
lines of the shell scripts) and the qemu protocols used in URLs, asks dpkg which
package provides each one found on this machine, and fails when that package is not
in `scripts/bootstrap.sh`'s APT_PACKAGES (or part of every Debian: Essential or
Priority required).  A program that is not installed here at all (one run only
inside the lab VM, or a word that is not a program) is not judged: on a bare machine
the tier that runs it fails instead.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".cache", "__pycache__", "node_modules"}
SUBPROCESS_CALLS = {"run", "Popen", "check_output", "check_call", "call"}
QEMU_MODULE_DIR = Path("/usr/lib/x86_64-linux-gnu/qemu")
QEMU_PROTOCOLS = ("iscsi", "nfs", "ssh", "rbd", "gluster", "http", "https", "nbd")

# Strings that open an argv-like list but name a value, not the program that runs.
NOT_PROGRAMS = {
    "file": "a disk format (ggnet_storage.disk_format), not file(1)",
    "lab": "a CLI subcommand",
    "get": "a zfs subcommand",
    "test": "a pytest marker / word, not test(1)",
    "write": "a word in a test's data, not write(1)",
}

# Programs run only on the boot server (the lab VM, over ssh), never on this machine.
SERVER_ONLY = {
    "curl": "molecule's checks run it inside the lab VM",
    "journalctl": "molecule's checks run it inside the lab VM",
    "systemctl": "preflight runs it on a boot server; molecule inside the lab VM",
    "systemd-analyze": "the console test uses it only where it is installed",
}

# Programs a script installs itself when they are missing (any package providing the
# command will do: nodesource's nodejs bundles npm, Debian has a package of its own).
INSTALLED_ON_DEMAND = {
    "npm": "scripts/web_assets.sh apt-get installs Debian's npm when the command is missing",
}

SHELL_KEYWORDS = {
    "if",
    "then",
    "else",
    "elif",
    "fi",
    "do",
    "done",
    "for",
    "while",
    "case",
    "esac",
    "in",
    "exec",
    "!",
    "{",
    "}",
    "function",
    "local",
    "return",
}


def apt_packages() -> set[str]:
    text = (REPO / "scripts" / "bootstrap.sh").read_text()
    body = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.S | re.M)
    assert body, "scripts/bootstrap.sh: no APT_PACKAGES=( ... ) list"
    words: set[str] = set()
    for line in body.group(1).splitlines():
        words.update(line.split("#", 1)[0].split())
    return words


def _source_files(suffix: str) -> Iterator[Path]:
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            if name.endswith(suffix):
                yield Path(root) / name


def _first_str(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def programs_in_python(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.List | ast.Tuple) and node.elts:
            name = _first_str(node.elts[0])
            if name:
                found.add(name)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            attr = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if attr in SUBPROCESS_CALLS | {"which"}:
                name = _first_str(node.args[0])
                if name:
                    found.add(name.split()[0] if name.strip() else name)
    return {n for n in found if re.fullmatch(r"[a-z][a-z0-9._+-]*", n)}


def programs_in_shell(path: Path) -> set[str]:
    found: set[str] = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        for part in re.split(r"\|\||&&|\||;|\$\(", line):
            words = part.split()
            while words and (words[0] in SHELL_KEYWORDS or "=" in words[0]):
                words = words[1:]
            if words and re.fullmatch(r"[a-z][a-z0-9._+-]*", words[0]):
                found.add(words[0])
    return found


def programs_named() -> dict[str, set[str]]:
    """program -> files that name it."""
    where: dict[str, set[str]] = {}
    for path in _source_files(".py"):
        for name in programs_in_python(path):
            where.setdefault(name, set()).add(str(path.relative_to(REPO)))
    for path in _source_files(".sh"):
        for name in programs_in_shell(path):
            where.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return where


def _dpkg_names(path: str) -> list[str]:
    # Merged /usr: dpkg knows a file under the path its package shipped it at.
    names = {path, os.path.realpath(path)}
    return sorted(names | {n[4:] for n in names if n.startswith("/usr/")})


def packages_of(paths: list[str]) -> dict[str, str]:
    """path -> the Debian package that ships it (one dpkg call for all of them)."""
    asked = sorted({name for path in paths for name in _dpkg_names(path)})
    proc = subprocess.run(
        ["dpkg", "-S", *asked],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, LC_ALL="C"),
    )
    owner: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        package, _, file = line.partition(": ")
        if "diversion" not in package:
            owner[file.strip()] = package.split(",")[0].split(":")[0].strip()
    return {p: next((owner[n] for n in _dpkg_names(p) if n in owner), "") for p in paths}


@functools.cache
def always_present(package: str) -> bool:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Essential} ${Priority}", package],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, LC_ALL="C"),
    )
    essential, _, priority = proc.stdout.partition(" ")
    return essential == "yes" or priority == "required"


def _venv_bin() -> str:
    return str(Path(sys.executable).parent)


def test_the_bootstrap_list_parses():
    packages = apt_packages()
    assert {"qemu-system-x86", "zfs-fuse", "tgt"} <= packages


def test_the_scan_finds_the_programs_we_know_we_call():
    # Guards the scanner itself: these are called in several forms across the tree.
    named = programs_named()
    for program in ("zfs", "tgtadm", "qemu-img", "dnsmasq", "ip", "debootstrap"):
        assert program in named, f"the scan no longer sees {program}"


def test_every_program_called_comes_from_a_bootstrap_package():
    listed = apt_packages()
    found = {}
    for program, files in sorted(programs_named().items()):
        if program in NOT_PROGRAMS or program in SERVER_ONLY or program in INSTALLED_ON_DEMAND:
            continue
        path = shutil.which(program)
        if path is None or path.startswith(_venv_bin()):
            continue  # not installed here (lab VM only, or not a program), or from the lock
        found[program] = (path, files)
    owners = packages_of([path for path, _ in found.values()])
    problems = []
    for program, (path, files) in found.items():
        package = owners[path]
        where = ", ".join(sorted(files)[:3])
        if not package:
            problems.append(f"{program} ({path}): no Debian package provides it; named in {where}")
        elif package not in listed and not always_present(package):
            problems.append(
                f"{program}: package {package} is not in scripts/bootstrap.sh "
                f"APT_PACKAGES; named in {where}"
            )
    assert problems == [], "\n".join(problems)


def test_every_qemu_protocol_used_has_its_module_in_the_bootstrap():
    listed = apt_packages()
    used: dict[str, set[str]] = {}
    pattern = re.compile(r"\b(" + "|".join(QEMU_PROTOCOLS) + r")://")
    for path in _source_files(".py"):
        text = path.read_text()
        if "qemu" not in text or path == Path(__file__).resolve():
            continue
        for proto in set(pattern.findall(text)):
            used.setdefault(proto, set()).add(str(path.relative_to(REPO)))
    assert "iscsi" in used, "the scan no longer sees the iscsi:// URLs the iSCSI tests use"
    problems = []
    for proto, files in sorted(used.items()):
        module = QEMU_MODULE_DIR / f"block-{'curl' if proto.startswith('http') else proto}.so"
        if not module.exists():
            continue  # built into qemu (nbd), or qemu's modules not installed here
        package = packages_of([str(module)])[str(module)]
        if package not in listed:
            problems.append(
                f"{proto}:// needs {module.name} from {package}, not in "
                f"scripts/bootstrap.sh; used in {', '.join(sorted(files)[:3])}"
            )
    assert problems == [], "\n".join(problems)
