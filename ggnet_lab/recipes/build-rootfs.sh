#!/bin/bash
# Builds the lab's boot-server root file system and its disk image.  Run by
# ggnet_lab.image inside a private mount namespace (unshare --mount), so the /proc,
# /sys and /dev mounts of the chroot vanish with this script whatever happens.
# Inputs (environment): ROOT OUT MIRROR SUITE APT_COMPONENTS PACKAGES DISABLE MASK FREE_MIB
#                       HOSTNAME_ ADDRESS ADDRESS6
set -euo pipefail
step() { echo "==> $*"; }

step "debootstrap $SUITE (minbase, $APT_COMPONENTS) from $MIRROR"
debootstrap --variant=minbase --components="$APT_COMPONENTS" "$SUITE" "$ROOT" "$MIRROR"

# Nothing installed below may start a daemon on the build host.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
# A small initrd boots faster under TCG: only what a virtio disk with ext4 needs.
mkdir -p "$ROOT/etc/initramfs-tools/conf.d"
echo 'MODULES=list' > "$ROOT/etc/initramfs-tools/conf.d/ggnet-lab"
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 > "$ROOT/etc/initramfs-tools/modules"

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount -t devpts devpts "$ROOT/dev/pts"

# zfs-dkms goes in last and alone: its postinst compiles OpenZFS's module for the
# image's kernel (the newest with headers) on the host's CPUs, the longest step.
FIRST=$(tr ' ' '\n' <<<"$PACKAGES" | grep -vx zfs-dkms | tr '\n' ' ')
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
step "apt-get install $(wc -w <<<"$FIRST") packages"
chroot "$ROOT" apt-get update -q
# shellcheck disable=SC2086  # a word list on purpose
chroot "$ROOT" apt-get install -y -q --no-install-recommends $FIRST

if grep -qw zfs-dkms <<<"$PACKAGES"; then
  kver=$(find "$ROOT/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
  sources=$(find "$ROOT"/usr/src/linux-headers-"$kver" -maxdepth 0 2>/dev/null | wc -l)
  [ "$sources" = 1 ] || { echo "no headers for kernel $kver: add linux-headers-amd64 to the recipe" >&2; exit 1; }
  step "compile OpenZFS's module for kernel $kver on $(nproc) host CPUs (10-30 min; under TCG hours)"
  chroot "$ROOT" apt-get install -y -q --no-install-recommends zfs-dkms > "$OUT/zfs-dkms.log" 2>&1 &
  apt_pid=$!
  # The compiler prints nothing for minutes: say how far it got.
  while kill -0 "$apt_pid" 2>/dev/null; do
    sleep 30
    echo "  ... $(find "$ROOT/var/lib/dkms/zfs" -name '*.o' 2>/dev/null | wc -l) objects compiled so far"
  done
  wait "$apt_pid" || { tail -n 20 "$OUT/zfs-dkms.log" >&2; exit 1; }
  # A build that silently made nothing would only show as a pool that never imports.
  if ! find "$ROOT/lib/modules/$kver" -name 'zfs.ko*' | grep -q .; then
    echo "no zfs.ko for $kver: read $OUT/zfs-dkms.log and the dkms make.log under $ROOT/var/lib/dkms/zfs" >&2
    exit 1
  fi
fi

step "configure: network, ssh, services"
echo "$HOSTNAME_" > "$ROOT/etc/hostname"
cat > "$ROOT/etc/hosts" <<HOSTS
127.0.0.1 localhost
${ADDRESS%/*} $HOSTNAME_
::1 localhost ip6-localhost ip6-loopback
HOSTS
echo '/dev/vda / ext4 rw,relatime,errors=remount-ro 0 1' > "$ROOT/etc/fstab"
cat > "$ROOT/etc/systemd/network/10-lab.network" <<NET
[Match]
Name=eth0

[Network]
Address=$ADDRESS
Address=$ADDRESS6
IPv6AcceptRA=no
LinkLocalAddressing=ipv6
NET
# The lab's SSH key arrives on the kernel command line at every boot, so the cached
# image holds no key and one image serves any lab directory.
cat > "$ROOT/usr/local/sbin/ggnet-lab-sshkey" <<'KEY'
#!/bin/sh
set -e
for word in $(cat /proc/cmdline); do
  case "$word" in
    ggnet.sshkey=*)
      install -d -m 700 /root/.ssh
      echo "${word#ggnet.sshkey=}" | base64 -d > /root/.ssh/authorized_keys
      chmod 600 /root/.ssh/authorized_keys ;;
  esac
done
KEY
chmod 755 "$ROOT/usr/local/sbin/ggnet-lab-sshkey"
cat > "$ROOT/etc/systemd/system/ggnet-lab-sshkey.service" <<'UNIT'
[Unit]
Description=Authorize the ggnet lab's SSH key from the kernel command line
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ggnet-lab-sshkey

[Install]
WantedBy=multi-user.target
UNIT
chroot "$ROOT" systemctl enable systemd-networkd.service ssh.service ggnet-lab-sshkey.service
for unit in $DISABLE; do chroot "$ROOT" systemctl disable "$unit" || true; done
for unit in $MASK; do chroot "$ROOT" systemctl mask "$unit"; done
chroot "$ROOT" passwd -l root >/dev/null
# Debian's mirrors keep only a suite's current versions, so the recipe names packages,
# not versions: what went into this image is recorded beside it instead.
chroot "$ROOT" dpkg-query -W -f='${Package}=${Version}\n' | LC_ALL=C sort > "$OUT/packages.lock"
# Host keys stay in the cached image: the lab is throwaway and ssh ignores them.
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT/usr/sbin/policy-rc.d"
rm -f "$ROOT/etc/machine-id" && touch "$ROOT/etc/machine-id"
umount "$ROOT/dev/pts" "$ROOT/dev" "$ROOT/sys" "$ROOT/proc"

step "kernel and initrd"
cp -L "$ROOT/vmlinuz" "$OUT/vmlinuz"
cp -L "$ROOT/initrd.img" "$OUT/initrd.img"

used_mib=$(du -sm "$ROOT" | cut -f1)
size_mib=$((used_mib + used_mib / 5 + FREE_MIB))
step "mkfs.ext4 -d: ${size_mib} MiB sparse image (${used_mib} MiB used)"
truncate -s "${size_mib}M" "$OUT/root.img"
mkfs.ext4 -q -F -L ggnet-root -d "$ROOT" "$OUT/root.img"
step "done: $(wc -l < "$OUT/packages.lock") Debian packages, versions in packages.lock"
