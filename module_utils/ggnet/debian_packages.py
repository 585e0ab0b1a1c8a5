"""Which of a list of Debian packages are not installed, from one dpkg-query.

ansible.builtin.apt opens apt's whole cache (python3-apt) even when every package is
already there; under a slow target that costs seconds per role.  dpkg's status answers
the question alone, and apt-get runs only when something is missing.
"""

from __future__ import annotations

import re

# Debian policy: lower case letters, digits, + - . ; at least two characters, starting
# with a letter or digit.  An optional :arch qualifier.
NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")
QUERY_FORMAT = "${binary:Package}\t${db:Status-Abbrev}\n"


class PackageError(Exception):
    """A package name that is not one; the message names it."""


def check_names(names: list[str]) -> list[str]:
    bad = [n for n in names if not isinstance(n, str) or not NAME.match(n)]
    if bad:
        raise PackageError(f"not Debian package names: {', '.join(map(repr, bad))}")
    return list(dict.fromkeys(names))


def missing(names: list[str], query_output: str) -> list[str]:
    """The NAMES that dpkg-query's output (QUERY_FORMAT) does not show installed
    ("ii"); a package dpkg has never heard of is absent from the output."""
    installed = set()
    for line in query_output.splitlines():
        package, _, status = line.partition("\t")
        if status.startswith("ii"):
            installed.add(package)
            installed.add(package.split(":", 1)[0])
    return [n for n in names if n not in installed]
