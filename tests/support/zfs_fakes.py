"""A stand-in for Zfs's command runner in unit tests: no zfs binary is run."""

from __future__ import annotations


class FakeZfsRunner:
    """Answers `zfs get` with the canned `listing`, every other command from `answers`
    in turn ((rc, stderr); success once they run out), and records every argv."""

    def __init__(self, *answers: tuple[int, str], listing: str = ""):
        self.answers = list(answers)
        self.listing = listing
        self.calls: list[list[str]] = []

    def __call__(self, argv, stdin=None):
        self.calls.append(list(argv))
        if argv[1] == "get":
            return 0, self.listing, ""
        rc, err = self.answers.pop(0) if self.answers else (0, "")
        return rc, "", err
