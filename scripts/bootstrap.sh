#!/usr/bin/env bash
# Installs everything ggnet's tools, tests and lab need on a bare Debian 12 machine:
# Debian packages, then a venv with the project and its dev extras.  Re-running is
# cheap: each step is skipped while its inputs (package list, pyproject.toml) are
# unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # the lab: namespaces, VM image, qemu PCs (BIOS + UEFI), boot programs
  iproute2 util-linux socat openssh-client qemu-system-x86 qemu-utils qemu-block-extra ovmf ipxe-qemu
  ipxe debootstrap e2fsprogs nasm gcc binutils mtools dosfstools gdisk gnu-efi tcpdump
  # daemons the integration tier runs for real on this machine
  zfs-fuse tgt dnsmasq dnsmasq-base libiscsi-bin util-linux-extra procps
  # monitoring checks
  prometheus prometheus-alertmanager prometheus-node-exporter
  # the console: noVNC in headless Chromium
  novnc python3-websockify chromium
  # the tools themselves
  git make
)
VENV=${GGNET_VENV:-.venv}
PY=${PYTHON:-python3}
stamp_dir=.cache/bootstrap
mkdir -p "$stamp_dir"

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
# pip, quiet, without this machine's notes about absent local indexes; a failure
# still fails the bootstrap (and shows pip's whole output).
pip_q() {
  local out
  if ! out=$("$VENV/bin/pip" "$@" 2>&1); then printf '%s\n' "$out" >&2; return 1; fi
  printf '%s\n' "$out" | grep -v -e '^WARNING: Location' -e '^$' || true
}

apt_key=$(printf '%s\n' "${APT_PACKAGES[@]}" | sha256sum | cut -c1-16)
missing=$(dpkg-query -W -f='${Package} ${Status}\n' "${APT_PACKAGES[@]}" 2>/dev/null \
          | awk '$4 != "installed" {print $1}' || true)
# dpkg-query says nothing at all for a package it has never heard of.
known=$(dpkg-query -W -f='${Package}\n' "${APT_PACKAGES[@]}" 2>/dev/null | wc -l || true)
if [ -n "$missing" ] || [ "$known" -lt "${#APT_PACKAGES[@]}" ] || [ ! -f "$stamp_dir/apt-$apt_key" ]; then
  step "Debian packages (${#APT_PACKAGES[@]}): apt-get install"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # Services must not start on the host: the tests start every daemon themselves.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
  touch "$stamp_dir/apt-$apt_key"
else
  step "Debian packages: all ${#APT_PACKAGES[@]} present"
fi

# The venv is installed from the lock (every package pinned, every file hashed), so two
# fresh machines a week apart get the same set; `make lock` moves it on purpose.
LOCK=requirements/dev.lock
py_key=$( (cat pyproject.toml "$LOCK"; echo "$VENV") | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$stamp_dir/py-$py_key" ]; then
  step "Python venv $VENV: pip install -r $LOCK (pinned, hashed; ansible's collections take a minute)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  pip_q install -q --require-hashes --no-deps -r "$LOCK"
  # The project itself: no build isolation, so the build backend is the locked one.
  # setuptools' notice that an editable install maps folders is expected here.
  PYTHONWARNINGS="ignore:Editable installation" pip_q install -q --no-deps --no-build-isolation -e .
  pip_q check
  "$VENV/bin/python" -c 'import ansible, ansible_runner, flask, netaddr, rtslib_fb, ggnet, ggnet_api, ggnet_cli, ggnet_privd, ggnet_lab, ggnet_testing'
  touch "$stamp_dir/py-$py_key"
else
  step "Python venv $VENV: up to date"
fi

# The web console's browser libraries (htmx, and axe-core for its tests), from npm's lock.
scripts/web_assets.sh
