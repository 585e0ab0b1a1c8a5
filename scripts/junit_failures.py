#!/usr/bin/env python3
"""Print the failed and errored tests of a JUnit XML report, one block each with the
first lines of its message.  molecule's verify runs minutes before its destroy: CI
logs keep only their tail, where this summary lands."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(path: str, lines: int = 12) -> int:
    report = Path(path)
    if not report.is_file():
        print(f"{path}: no JUnit report (the run stopped before its tests)")
        return 0
    bad = 0
    for case in ET.parse(report).iter("testcase"):
        for kind in ("failure", "error"):
            found = case.find(kind)
            if found is None:
                continue
            bad += 1
            text = (found.get("message") or "") + "\n" + (found.text or "")
            tail = [line for line in text.strip().splitlines() if line.strip()][-lines:]
            print(f"--- {kind.upper()}: {case.get('classname')}::{case.get('name')}")
            print("\n".join(tail))
    print(f"{bad} test(s) failed in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
