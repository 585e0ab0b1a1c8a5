"""Files on a boot server: one atomic write, and a whole list of files, directories
and their owners converged in one pass (the ggnet_files module).

Why one pass: under a slow target every module run costs seconds of start-up, and a
template task costs two runs (a stat, then the copy or the file module).  A role's
twenty files in one run cost one start-up.  The pass plans every entry first
(including each `validate` command on a temporary copy) and changes nothing when any
entry is wrong, so a bad template never leaves half a role written.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field

STATES = ("file", "directory", "absent", "touch")


class FileError(Exception):
    """An entry that cannot be converged; the message names its path and what is wrong."""


def write_atomic(
    path: str,
    text: str | bytes,
    mode: int = 0o644,
    uid: int = -1,
    gid: int = -1,
) -> None:
    """Replace PATH with TEXT: a reader sees the old file or the new one, never half of
    one.  The file has MODE (and UID/GID, where given) before any of TEXT is in it
    (secrets: 0o600)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ggnet-", dir=directory)
    try:
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        data = text.encode("utf-8") if isinstance(text, str) else text
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha1_file(path: str) -> str | None:
    """The SHA-1 of PATH's bytes, or None when it is not a regular file."""
    try:
        with open(path, "rb") as fh:
            digest = hashlib.sha1()
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return digest.hexdigest()


@dataclass
class Entry:
    """One wanted path, as the module's `files` option gives it."""

    path: str
    state: str
    content: bytes | None = None
    checksum: str | None = None  # the wanted bytes' SHA-1 when they travel as a file
    source: str | None = None  # a file on the server holding the wanted bytes
    owner: str | None = None
    group: str | None = None
    mode: int | None = None
    recurse: bool = False
    validate: str | None = None
    secret: bool = False

    @classmethod
    def parse(cls, raw: dict) -> Entry:
        path = raw.get("path")
        where = f"files entry {path!r}" if path else "a files entry"
        if not path or not os.path.isabs(path):
            raise FileError(f"{where}: path must be an absolute path")
        state = raw.get("state") or ("file" if _has_content(raw) else "directory")
        if state not in STATES:
            raise FileError(f"{where}: state {state!r} is not one of {', '.join(STATES)}")
        if state == "file" and not _has_content(raw):
            raise FileError(f"{where}: state file needs content, a checksum or a source")
        if state != "file" and _has_content(raw):
            raise FileError(f"{where}: content, checksum and source go with state file only")
        if raw.get("recurse") and state != "directory":
            raise FileError(f"{where}: recurse goes with state directory only")
        if raw.get("validate") and "%s" not in raw["validate"]:
            raise FileError(f"{where}: validate {raw['validate']!r} must contain %s")
        mode = raw.get("mode")
        if mode is not None:
            try:
                mode = int(str(mode), 8)
            except ValueError:
                raise FileError(f"{where}: mode {raw['mode']!r} is not an octal mode") from None
            if not 0 <= mode <= 0o7777:
                raise FileError(f"{where}: mode {raw['mode']!r} is out of range")
        content = raw.get("content")
        return cls(
            path=os.path.normpath(path),
            state=state,
            content=content.encode("utf-8") if isinstance(content, str) else content,
            checksum=raw.get("checksum"),
            source=raw.get("source"),
            owner=raw.get("owner"),
            group=raw.get("group"),
            mode=mode,
            recurse=bool(raw.get("recurse")),
            validate=raw.get("validate"),
            secret=bool(raw.get("secret")),
        )


def _has_content(raw: dict) -> bool:
    return any(raw.get(key) is not None for key in ("content", "checksum", "source"))


@dataclass
class Change:
    """What converging one entry does (or did)."""

    path: str
    actions: list[str] = field(default_factory=list)
    needs_transfer: bool = False
    before: str | None = None  # text of a changed file, for the diff
    after: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def _ids(entry: Entry) -> tuple[int, int]:
    try:
        uid = pwd.getpwnam(entry.owner).pw_uid if entry.owner else -1
    except KeyError:
        raise FileError(f"{entry.path}: owner {entry.owner!r} is not a user here") from None
    try:
        gid = grp.getgrnam(entry.group).gr_gid if entry.group else -1
    except KeyError:
        raise FileError(f"{entry.path}: group {entry.group!r} is not a group here") from None
    return uid, gid


def _attribute_actions(st: os.stat_result, entry: Entry, uid: int, gid: int) -> list[str]:
    actions = []
    if uid != -1 and st.st_uid != uid:
        actions.append(f"owner {entry.owner}")
    if gid != -1 and st.st_gid != gid:
        actions.append(f"group {entry.group}")
    if entry.mode is not None and stat.S_IMODE(st.st_mode) != entry.mode:
        actions.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {entry.mode:04o}")
    return actions


def _wanted_bytes(entry: Entry) -> bytes | None:
    """The wanted content, where it is at hand (inline, or in a server-side source)."""
    if entry.content is not None:
        return entry.content
    if entry.source is not None:
        try:
            with open(entry.source, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise FileError(
                f"{entry.path}: cannot read source {entry.source}: {exc.strerror}"
            ) from None
    return None


def _text(data: bytes | None) -> str | None:
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def plan_entry(
    entry: Entry, transferred: str | None = None, defer_validate: bool = False
) -> Change:
    """What converging ENTRY would change; raises FileError for what cannot be done.
    TRANSFERRED is the server-side copy of a checksum entry's bytes, once sent.
    DEFER_VALIDATE leaves the entry's check to apply_entry (its program is not there yet)."""
    change = Change(entry.path)
    uid, gid = _ids(entry)
    try:
        st: os.stat_result | None = os.lstat(entry.path)
    except FileNotFoundError:
        st = None
    if entry.state == "absent":
        if st is not None:
            change.actions.append("remove")
        return change
    if entry.state == "directory":
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise FileError(f"{entry.path}: exists and is not a directory")
        if st is None:
            change.actions.append("create directory")
        else:
            change.actions += _attribute_actions(st, entry, uid, gid)
            if entry.recurse and not change.actions:
                change.actions += _recurse_actions(entry, uid, gid)
        return change
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise FileError(f"{entry.path}: exists and is not a regular file")
    if entry.state == "touch":
        change.actions += ["create file"] if st is None else _attribute_actions(st, entry, uid, gid)
        return change
    wanted = _wanted_bytes(entry)
    if wanted is None:  # a checksum entry: compare without the bytes
        if sha1_file(entry.path) != entry.checksum:
            if transferred is None:
                change.needs_transfer = True
            change.actions.append("create file" if st is None else "content")
    else:
        current = None
        if st is not None:
            with open(entry.path, "rb") as fh:
                current = fh.read()
        if current != wanted:
            change.actions.append("create file" if st is None else "content")
            if not entry.secret:
                change.before, change.after = _text(current), _text(wanted)
    if st is not None and "content" not in change.actions:
        change.actions += _attribute_actions(st, entry, uid, gid)
    if ("create file" in change.actions or "content" in change.actions) and not defer_validate:
        _validate(entry, wanted, transferred)
    return change


def _recurse_actions(entry: Entry, uid: int, gid: int) -> list[str]:
    for root, dirs, files in os.walk(entry.path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
                return ["owner and group of what it holds"]
    return []


def _validate(entry: Entry, wanted: bytes | None, transferred: str | None) -> None:
    if not entry.validate:
        return
    if wanted is None and transferred is None:
        return  # validated once the bytes are here
    directory = os.path.dirname(entry.path)
    base = directory if os.path.isdir(directory) else None
    fd, tmp = tempfile.mkstemp(prefix=".ggnet-validate-", dir=base)
    try:
        with os.fdopen(fd, "wb") as fh:
            if wanted is not None:
                fh.write(wanted)
            else:
                with open(transferred or "", "rb") as src:
                    shutil.copyfileobj(src, fh)
        argv = [
            tmp if arg == "%s" else arg.replace("%s", tmp) for arg in shlex.split(entry.validate)
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    finally:
        os.unlink(tmp)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().replace(tmp, entry.path)
        raise FileError(
            f"{entry.path}: the new content fails its check `{entry.validate}` "
            f"(exit {proc.returncode}): {said}; nothing was changed"
        )


def apply_entry(
    entry: Entry, change: Change, transferred: str | None = None, deferred: bool = False
) -> None:
    """Make ENTRY so, as planned in CHANGE (running its check now when DEFERRED)."""
    if not change.changed:
        return
    uid, gid = _ids(entry)
    if entry.state == "absent":
        if os.path.isdir(entry.path) and not os.path.islink(entry.path):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
        return
    if entry.state == "directory":
        if not os.path.isdir(entry.path):
            os.makedirs(os.path.dirname(entry.path) or "/", exist_ok=True)
            os.mkdir(entry.path, 0o700)  # tightened first, opened by the chmod below
        os.chown(entry.path, uid, gid)
        os.chmod(entry.path, entry.mode if entry.mode is not None else 0o755)
        if entry.recurse:
            for root, dirs, files in os.walk(entry.path):
                for name in dirs + files:
                    os.lchown(os.path.join(root, name), uid, gid)
        return
    mode = entry.mode if entry.mode is not None else 0o644
    if "create file" in change.actions or "content" in change.actions:
        if entry.state == "touch":
            write_atomic(entry.path, b"", mode, uid, gid)
            return
        data = _wanted_bytes(entry)
        if data is None:
            with open(transferred or "", "rb") as fh:
                data = fh.read()
        if deferred:
            _validate(entry, data, transferred)
        write_atomic(entry.path, data, mode, uid, gid)
        return
    os.chown(entry.path, uid, gid)
    if entry.mode is not None:
        os.chmod(entry.path, entry.mode)


def converge(
    raw_entries: list[dict],
    check_mode: bool = False,
    transferred: dict[str, str] | None = None,
) -> tuple[list[Change], list[str]]:
    """Plan every entry, then (not in check mode, and only when no entry still waits
    for its bytes) apply them in order.  Returns the changes and the paths whose bytes
    must be sent first (the caller sends them and calls again).

    Every `validate` runs while planning, except one whose program this same list
    writes (the console's token check, installed beside the file it checks): that one
    runs when its entry's turn comes, after the program is in place."""
    transferred = transferred or {}
    entries = [Entry.parse(raw) for raw in raw_entries]
    seen: set[str] = set()
    for entry in entries:
        if entry.path in seen:
            raise FileError(f"{entry.path}: listed twice")
        seen.add(entry.path)
    written = {e.path for e in entries if e.state == "file"}
    deferred = [bool(e.validate) and _program(e.validate or "") in written for e in entries]
    changes = [
        plan_entry(e, transferred.get(e.path), d) for e, d in zip(entries, deferred, strict=True)
    ]
    needed = [c.path for c in changes if c.needs_transfer]
    if check_mode or needed:
        return changes, needed
    for entry, change, defer in zip(entries, changes, deferred, strict=True):
        apply_entry(entry, change, transferred.get(entry.path), defer)
    return changes, []


def _program(command: str) -> str:
    words = shlex.split(command)
    return os.path.normpath(words[0]) if words else ""
