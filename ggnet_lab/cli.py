"""`ggnet lab up | status | boot CLIENT | down | demo | image`.

Heavy imports stay inside the functions: `ggnet --help` must not pay for them.
"""

from __future__ import annotations

import argparse
import sys
import time

HELP = "the built-in lab: up | status | boot CLIENT | down | demo"


def say(message: str) -> None:
    print(message, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="network namespace, boot-server VM (image built if needed)")
    up.add_argument("--rebuild", action="store_true", help="rebuild the VM image first")
    sub.add_parser("status", help="what the lab runs: VM, ssh, PCs")
    boot = sub.add_parser("boot", help="boot a lab PC and time its boot stages")
    boot.add_argument(
        "client",
        metavar="CLIENT",
        help="a client of the lab inventory by name or MAC (any notation), e.g. pc-bios",
    )
    boot.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    boot.add_argument(
        "--until",
        default="marker",
        metavar="STAGE",
        help="stop at this stage (default marker); see `ggnet lab stages`",
    )
    boot.add_argument("--keep", action="store_true", help="leave the PC running afterwards")
    boot.add_argument("-i", "--inventory", help="inventory (default inventory/lab)")
    down = sub.add_parser("down", help="stop everything the lab started, remove its network")
    down.add_argument(
        "--force",
        action="store_true",
        help="even while another session (a pytest run) holds the lab",
    )
    demo = sub.add_parser("demo", help="up, converge playbooks/site.yml, boot every lab PC")
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds per PC boot")
    image = sub.add_parser("image", help="build (or find) the cached boot-server image")
    image.add_argument("--rebuild", action="store_true", help="build even if cached")
    sub.add_parser("stages", help="list the boot stages `boot --until` knows")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from .client import ClientError
    from .image import ImageError
    from .netns import NetnsError
    from .vm import VMError

    actions = {
        "up": cmd_up,
        "status": cmd_status,
        "boot": cmd_boot,
        "down": cmd_down,
        "demo": cmd_demo,
        "image": cmd_image,
        "stages": cmd_stages,
    }
    try:
        return actions[args.lab_command](args)
    except (ClientError, ImageError, NetnsError, VMError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def up(rebuild: bool = False) -> dict[str, float]:
    """Bring the lab up; returns the seconds each step took."""
    from . import paths

    with paths.locked():
        return _up(rebuild)


def _up(rebuild: bool) -> dict[str, float]:
    from . import image, netns, vm

    timings = {}
    t0 = time.monotonic()
    netns.create()
    say(f"net: namespace {netns.NETNS_PATH.name}, bridge {netns.BRIDGE} "
        f"{netns.BRIDGE_ADDRESS} {netns.BRIDGE_ADDRESS6}")  # fmt: skip
    t = time.monotonic()
    img = image.ensure_image(progress=say, rebuild=rebuild)
    timings["image"] = time.monotonic() - t
    if vm.pid() is not None and vm.ssh_ok():
        say(f"vm: {vm.NAME} already runs (pid {vm.pid()}) and answers ssh")
    else:
        t = time.monotonic()
        vm.start(img, progress=say)
        vm.wait_for_ssh(progress=say)
        timings["boot_to_ssh"] = time.monotonic() - t
    vm.verify_lio()
    say("vm: LIO loads (target_core_mod, iscsi_target_mod, /sys/kernel/config/target)")
    timings["total"] = time.monotonic() - t0
    return timings


def cmd_up(args: argparse.Namespace) -> int:
    import shlex

    from . import paths, vm

    timings = up(rebuild=args.rebuild)
    say(f"lab up in {timings['total']:.0f}s: {vm.NAME} at {vm.ADDRESS}, state in {paths.lab_dir()}")
    say(f"  ssh:     {shlex.join(vm.ssh_argv())}")
    say("  ansible: ansible -i inventory/lab ggnet_servers -m ping")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from . import client, image, netns, paths, vm

    img = image.cached_image()
    say(f"image:  {img.directory} ({'built' if img.complete() else 'not built'})")
    if not netns.exists():
        say("net:    down (no namespace)")
    else:
        say(f"net:    namespace {netns.NETNS_PATH.name}, taps: {', '.join(netns.taps()) or '-'}")
    vm_pid = vm.pid()
    if vm_pid is None:
        say(f"vm:     {vm.NAME} not running")
    else:
        say(f"vm:     {vm.NAME} pid {vm_pid}, ssh {'ok' if vm.ssh_ok() else 'NOT answering'}, "
            f"console {vm.files().serial}")  # fmt: skip
    pcs = client.running()
    say("pcs:    " + (", ".join(f"{n} (pid {p})" for n, p in pcs.items()) or "none running"))
    say(f"state:  {paths.lab_dir()}")
    return 0 if vm_pid is not None else 3


def _pcs(inventory: str | None) -> dict:
    from pathlib import Path

    from . import client

    try:
        return client.lab_pcs(Path(inventory) if inventory else None)
    except client.ClientError:
        raise
    except Exception as exc:  # the inventory loader's own errors
        raise client.ClientError(f"cannot read the lab inventory: {exc}") from exc


def cmd_boot(args: argparse.Namespace) -> int:
    from . import client

    pcs = _pcs(args.inventory)
    pc = client.find(pcs, args.client)
    if pc is None:
        print(
            f"error: no client {args.client!r} in the inventory; lab PCs: {', '.join(pcs)}",
            file=sys.stderr,
        )
        return 2
    result = client.boot(pc, until=args.until, timeout=args.timeout, keep=args.keep, progress=say)
    say(client.format_summary(result))
    if args.keep and result.pid is not None:
        say(f"{pc.name} keeps running (pid {result.pid}); `ggnet lab down` stops it")
    return 0 if result.reached else 1


def cmd_stages(args: argparse.Namespace) -> int:
    from . import stages

    for stage in stages.STAGES:
        say(f"{stage.name:<11} {stage.description}")
    return 0


def down() -> list[str]:
    """Stop every lab process by its PID file and remove the network; returns what went."""
    from . import paths

    with paths.locked():
        return _down()


def _down() -> list[str]:
    from . import client, netns, paths, process, vm

    gone = []
    pcs_root = paths.lab_dir() / "pcs"
    if pcs_root.is_dir():
        for directory in sorted(pcs_root.iterdir()):
            if client.stop(directory.name):
                gone.append(f"pc {directory.name}")
    if vm.stop(progress=say, grace=30):
        gone.append(f"vm {vm.NAME}")
    process.stop(vm.files().pidfile)
    for disk in (vm.files().overlay, vm.files().pool_disk, vm.files().monitor):
        disk.unlink(missing_ok=True)
    if netns.exists():
        netns.delete()
        gone.append(f"namespace {netns.NETNS_PATH.name}")
    return gone


def cmd_down(args: argparse.Namespace) -> int:
    from . import leases

    users = leases.holders()
    if users and not args.force:
        print(
            "error: the lab is in use by "
            + "; ".join(f"pid {pid} ({cmd[:80]})" for pid, cmd in users.items())
            + ": wait for it to finish, or `ggnet lab down --force` to take the lab away",
            file=sys.stderr,
        )
        return 1
    gone = down()
    say("lab down: " + (", ".join(gone) if gone else "nothing was running"))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from . import image

    img = image.ensure_image(progress=say, rebuild=args.rebuild)
    say(str(img.directory))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from . import client, paths

    up()
    root = paths.repo_root()
    site = root / "playbooks" / "site.yml"
    if not site.is_file():
        say(f"demo: {site} does not exist yet, skipping the converge")
    else:
        say(
            "demo: converging the boot server: ansible-playbook -i inventory/lab playbooks/site.yml"
        )
        bindir = os.path.dirname(sys.executable)
        playbook = os.path.join(bindir, "ansible-playbook")
        env = dict(os.environ, ANSIBLE_CONFIG=str(root / "ansible.cfg"))
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        code = subprocess.run(
            [playbook if os.path.exists(playbook) else "ansible-playbook",
             "-i", "inventory/lab", "playbooks/site.yml"],
            cwd=root, env=env,
        ).returncode  # fmt: skip
        if code != 0:
            say(
                f"demo: the converge failed (exit {code}); the PCs boot anyway to show how far they get"
            )
    results = []
    for pc in _pcs(None).values():
        say(f"demo: booting {pc.name} ({pc.firmware})")
        results.append(client.boot(pc, timeout=args.timeout, progress=say))
    say("\n==> demo summary")
    for result in results:
        say(client.format_summary(result))
    say(
        "\nNext: VM console "
        f"{paths.vm_dir() / 'serial.log'}; each PC's serial console, capture.pcap "
        f"(tcpdump -r) and qemu.log under {paths.lab_dir() / 'pcs'}; `ggnet lab status`; "
        "`ggnet lab down` when done."
    )
    return 0 if all(r.reached for r in results) else 1
