"""What a `--check --diff` converge says differs, per PC: the drift report.

`summarise` reads the document Ansible's `ansible.posix.json` stdout callback prints
(plays[].tasks[].hosts[host] -> that host's result, loops in `results`) and sorts
what each task would change into four columns per PC -- writeback, target, DHCP entry,
boot-path entry -- plus the server-wide changes that belong to no PC, and the failures
that stopped the run.

No engine here: reading the document must not need Ansible or the inventory.  Target
IQNs are turned into PC names through `iqn_of`, which the caller builds with the
engine's own `target_iqn`, so the IQN notation stays the engine's alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# The tasks whose results name PCs, by the module they run (the task's `action`)...
WRITEBACKS = "ggnet_writebacks"
TARGETS = "ggnet_targets"
INVENTORY_SYNC = "ggnet_inventory_sync"
# ...and the template task of roles/ggnet_netboot that writes one `mac,ip,name` per PC.
# Also "... now": the retire phase writes the same file before the targets go.
DHCP_TASK = "Write the fixed addresses of the PCs"

COLUMNS = ("writeback", "target", "dhcp", "boot")
COLUMN_TITLES = {"writeback": "writeback", "target": "target", "dhcp": "DHCP", "boot": "boot"}
NOT_IN_INVENTORY = "(not in the inventory)"

_WRITEBACK_WORDS = {
    "create_writeback": "create",
    "replace_writeback": "replace",
    "set_quota": "quota",
    "destroy_writeback": "destroy",
    "record_disks": "record",
}

# (server, PC name) -> that PC's target IQN on that server, or None when the name
# cannot form one.
IqnOf = Callable[[str, str], "str | None"]


@dataclass(frozen=True)
class Change:
    """One thing a server would do differently for a PC (or for itself)."""

    server: str
    change: str
    detail: str = ""

    def text(self, with_server: bool = False) -> str:
        out = f"{self.change} ({self.detail})" if self.detail else self.change
        return f"{out} on {self.server}" if with_server else out

    def as_dict(self) -> dict[str, str]:
        return {"server": self.server, "change": self.change, "detail": self.detail}


@dataclass
class PcDrift:
    name: str
    writeback: list[Change] = field(default_factory=list)
    target: list[Change] = field(default_factory=list)
    dhcp: list[Change] = field(default_factory=list)
    boot: list[Change] = field(default_factory=list)

    def column(self, name: str) -> list[Change]:
        changes: list[Change] = getattr(self, name)
        return changes

    def add(self, column: str, change: Change) -> None:
        if change not in self.column(column):
            self.column(column).append(change)

    def as_dict(self) -> dict[str, Any]:
        return {"pc": self.name, **{c: [x.as_dict() for x in self.column(c)] for c in COLUMNS}}


@dataclass(frozen=True)
class ServerChange:
    """A change of a server's own things (images, packages, configuration files)."""

    server: str
    task: str  # role/task
    detail: str = ""

    def text(self) -> str:
        return f"{self.server}: {self.task}: changed" + (f" ({self.detail})" if self.detail else "")

    def as_dict(self) -> dict[str, str]:
        return {"server": self.server, "task": self.task, "detail": self.detail}


@dataclass(frozen=True)
class Failure:
    """A task that stopped the run on a host."""

    host: str
    task: str  # role/task
    msg: str
    unreachable: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "task": self.task,
            "msg": self.msg,
            "unreachable": self.unreachable,
        }


@dataclass
class Report:
    pcs: dict[str, PcDrift] = field(default_factory=dict)
    servers: list[ServerChange] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # every host the run reached

    @property
    def differs(self) -> bool:
        return bool(self.pcs or self.servers)

    def pc(self, name: str) -> PcDrift:
        return self.pcs.setdefault(name, PcDrift(name))

    def as_dict(self) -> dict[str, Any]:
        return {
            "differs": self.differs,
            "failed": bool(self.failures),
            "hosts": self.hosts,
            "pcs": [self.pcs[name].as_dict() for name in sorted(self.pcs)],
            "servers": [s.as_dict() for s in self.servers],
            "failures": [f.as_dict() for f in self.failures],
        }


@dataclass(frozen=True)
class _Result:
    """One host's result of one task, loop items flattened into their own results."""

    host: str
    task: str  # role/task
    action: str  # the module's short name
    result: Mapping[str, Any]
    handler: bool


def task_label(name: str) -> str:
    """'role : task' as the callback names a role's task -> 'role/task'."""
    role, sep, task = name.partition(" : ")
    return f"{role}/{task}" if sep else name


def _results(document: Mapping[str, Any]) -> Iterator[_Result]:
    for play in document.get("plays") or []:
        for entry in play.get("tasks") or []:
            task = entry.get("task") or {}
            # A role's handler runs because another task changed: that task is the drift.
            handler = "/handlers/" in str(task.get("path", ""))
            label = task_label(str(task.get("name", "")))
            for host, result in (entry.get("hosts") or {}).items():
                if not isinstance(result, Mapping):
                    continue
                action = str(result.get("action", "")).rsplit(".", 1)[-1]
                yield _Result(host, label, action, result, handler)


def _changed(result: Mapping[str, Any]) -> bool:
    if result.get("skipped") or result.get("failed") or result.get("unreachable"):
        return False
    items = result.get("results")
    if isinstance(items, list) and "changed" not in result:
        return any(isinstance(i, Mapping) and _changed(i) for i in items)
    return bool(result.get("changed"))


def summarise(
    document: Mapping[str, Any], pcs: Iterable[str] = (), iqn_of: IqnOf | None = None
) -> Report:
    """The drift report of one `ansible-playbook --check --diff` run's JSON document.

    PCS are the inventory's PC names; with IQN_OF they turn target IQNs back into names.
    Names that only the servers still know (a removed PC's writeback, DHCP or boot
    entry) are looked up as well, so a removed PC is one line; an IQN matching no name
    at all is reported as "(not in the inventory) <iqn>".
    """
    report = Report(hosts=sorted((document.get("stats") or {}).keys()))
    targets: list[tuple[str, Mapping[str, Any]]] = []
    for item in _results(document):
        if item.handler or not _ok(item.result):
            continue
        if item.action == TARGETS:
            # Attributed once every name is known, below.
            targets += [(item.host, a) for a in item.result.get("actions") or []]
            attributed = bool(item.result.get("actions"))
        elif item.action == WRITEBACKS:
            attributed = _writebacks(report, item)
        elif item.action == INVENTORY_SYNC:
            attributed = _boot_entries(report, item)
        elif item.task.rsplit("/", 1)[-1].startswith(DHCP_TASK):
            attributed = _dhcp(report, item)
        else:
            attributed = False
        if _changed(item.result) and not attributed:
            # Images, packages, configuration files -- or a PC task whose change names
            # no PC (a target configuration saved anew, the hosts file's header).
            report.servers.append(ServerChange(item.host, item.task, _detail(item.result)))
    _targets(report, targets, set(pcs), iqn_of)
    report.failures = failures(document)
    return report


def _ok(result: Mapping[str, Any]) -> bool:
    return not (result.get("skipped") or result.get("failed") or result.get("unreachable"))


def _detail(result: Mapping[str, Any]) -> str:
    """What a server-wide change does, when its result says: storage actions, or
    ggnet_targets' saved configuration."""
    if result.get("persisted") and not result.get("actions"):
        return "saved configuration"
    actions = result.get("actions")
    if not isinstance(actions, list):
        return ""
    words = [
        f"{a['action']} {a['target']}"
        for a in actions
        if isinstance(a, Mapping) and "action" in a and "target" in a
    ]
    return ", ".join(words)


def _writebacks(report: Report, item: _Result) -> bool:
    found = False
    for action in item.result.get("actions") or []:
        name = action.get("client")
        if not name:
            continue
        kind = str(action.get("action", ""))
        word = _WRITEBACK_WORDS.get(kind, kind)
        detail = str(action.get("detail", "")) if word in ("destroy", "replace", "quota") else ""
        report.pc(name).add("writeback", Change(item.host, word, detail))
        found = True
    for waiting in item.result.get("pending") or []:
        name = waiting.get("client")
        if name:
            detail = f"{waiting.get('disk', '?')}: {waiting.get('why', '')}".rstrip(": ")
            report.pc(name).add("writeback", Change(item.host, "pending", detail))
            found = True
    return found


def _boot_entries(report: Report, item: _Result) -> bool:
    entries = item.result.get("boot_entries")
    if not isinstance(entries, Mapping):
        return False  # a server whose module predates boot_entries
    found = False
    for name in entries.get("added") or []:
        report.pc(str(name)).add("boot", Change(item.host, "added"))
        found = True
    for name in entries.get("removed") or []:
        report.pc(str(name)).add("boot", Change(item.host, "removed"))
        found = True
    changed = entries.get("changed") or {}
    if isinstance(changed, Mapping):
        for name, keys in changed.items():
            detail = ", ".join(str(k) for k in keys) if isinstance(keys, list) else ""
            report.pc(str(name)).add("boot", Change(item.host, "changed", detail))
            found = True
    return found


def _targets(
    report: Report,
    actions: list[tuple[str, Mapping[str, Any]]],
    pcs: set[str],
    iqn_of: IqnOf | None,
) -> None:
    names = pcs | set(report.pcs)
    lookup: dict[tuple[str, str], str] = {}
    for server in {server for server, _ in actions}:
        for name in names:
            iqn = iqn_of(server, name) if iqn_of else None
            if iqn:
                lookup[(server, iqn)] = name
    ops: dict[tuple[str, str], list[str]] = {}
    for server, action in actions:
        iqn = str(action.get("target", ""))
        seen = ops.setdefault((server, iqn), [])
        if action.get("op") not in seen:
            seen.append(str(action.get("op")))
    for (server, iqn), done in ops.items():
        name = lookup.get((server, iqn), f"{NOT_IN_INVENTORY} {iqn}")
        pc = report.pc(name)
        if "delete_target" in done:
            pc.add("target", Change(server, "delete"))
        if "create_target" in done:
            pc.add("target", Change(server, "create"))
        rest = [op for op in done if op not in ("delete_target", "create_target")]
        if rest and "create_target" not in done:
            pc.add("target", Change(server, "change", ", ".join(rest)))


@dataclass(frozen=True)
class _Entry:
    mac: str
    ip: str
    name: str


def _entries(text: object) -> list[_Entry]:
    out = []
    for line in str(text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            out.append(_Entry(parts[0].lower(), parts[1], parts[2]))
    return out


def _diffs(result: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every before/after pair in a result: `diff` is a dict or a list, maybe per item."""
    for source in [result, *(r for r in result.get("results") or [] if isinstance(r, Mapping))]:
        diff = source.get("diff")
        for one in diff if isinstance(diff, list) else [diff]:
            if isinstance(one, Mapping) and ("before" in one or "after" in one):
                yield one


def _dhcp(report: Report, item: _Result) -> bool:
    """Per PC, the hosts file's lines added, removed or changed: matched by name, and by
    MAC so that a renamed PC says which name its MAC had."""
    found = False
    for diff in _diffs(item.result):
        before, after = _entries(diff.get("before")), _entries(diff.get("after"))
        old_by_name = {e.name: e for e in before}
        old_by_mac = {e.mac: e for e in before}
        new_by_name = {e.name: e for e in after}
        new_by_mac = {e.mac: e for e in after}
        for entry in after:
            old = old_by_name.get(entry.name)
            if old == entry:
                continue
            if old is not None:
                fields = [
                    f"{key} {getattr(old, key)} -> {getattr(entry, key)}"
                    for key in ("mac", "ip")
                    if getattr(old, key) != getattr(entry, key)
                ]
                change = Change(item.host, "change", ", ".join(fields))
            else:
                was = old_by_mac.get(entry.mac)
                detail = ""
                if was is not None and was.name not in new_by_name:
                    detail = f"{entry.mac} was {was.name}"
                change = Change(item.host, "add", detail)
            report.pc(entry.name).add("dhcp", change)
            found = True
        for entry in before:
            if entry.name in new_by_name:
                continue
            now = new_by_mac.get(entry.mac)
            detail = f"{entry.mac} is now {now.name}" if now else ""
            report.pc(entry.name).add("dhcp", Change(item.host, "remove", detail))
            found = True
    return found


def failures(document: Mapping[str, Any]) -> list[Failure]:
    """The task that stopped each failed or unreachable host.  Hosts whose stats count
    no failure had only ignored or rescued ones, which stopped nothing."""
    stats = document.get("stats") or {}
    stopped = {
        host
        for host, counts in stats.items()
        if isinstance(counts, Mapping) and (counts.get("failures") or counts.get("unreachable"))
    }
    last: dict[str, Failure] = {}
    for item in _results(document):
        result = item.result
        if item.host not in stopped or not (result.get("failed") or result.get("unreachable")):
            continue
        last[item.host] = Failure(
            item.host, item.task, _failure_msg(result), bool(result.get("unreachable"))
        )
    return [last[h] for h in sorted(last)]


def _failure_msg(result: Mapping[str, Any]) -> str:
    msgs = []
    for one in result.get("results") or []:
        if isinstance(one, Mapping) and one.get("failed") and one.get("msg"):
            label = one.get("_ansible_item_label", one.get("item", ""))
            msgs.append(f"{label}: {one['msg']}" if label != "" else str(one["msg"]))
    return "; ".join(msgs) or str(result.get("msg") or "failed (no message)").strip()


def render(report: Report) -> str:
    """The report as an operator reads it: one line per PC that differs, the
    server-wide changes, or the one line saying nothing differs."""
    if not report.differs:
        return "no drift: the servers match the inventory"
    servers = {c.server for p in report.pcs.values() for col in COLUMNS for c in p.column(col)}
    several = len(servers) > 1
    rows = []
    for name in sorted(report.pcs, key=lambda n: (n.startswith(NOT_IN_INVENTORY), n)):
        pc = report.pcs[name]
        cells = []
        for col in COLUMNS:
            text = ", ".join(c.text(several) for c in pc.column(col)) or "-"
            cells.append(f"{COLUMN_TITLES[col]}: {text}")
        rows.append((name, cells))
    widths = [max(len(r[0]) for r in rows)] if rows else [0]
    for i in range(len(COLUMNS)):
        widths.append(max((len(r[1][i]) for r in rows), default=0))
    lines = []
    for name, cells in rows:
        padded = [name.ljust(widths[0])] + [
            c.ljust(w) for c, w in zip(cells, widths[1:], strict=True)
        ]
        lines.append("   ".join(padded).rstrip())
    if report.servers:
        if lines:
            lines.append("")
        lines.append("server-wide:")
        lines += [f"  {s.text()}" for s in report.servers]
    return "\n".join(lines)
