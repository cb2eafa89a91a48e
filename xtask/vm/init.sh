#!/bin/sh
# /init of the test VM's initramfs: mount the host's root read-only over 9p,
# chroot into it and run the test script from the writable share, then power off.
# The guest sees the host work folder at /tmp/vmwork (9p tag "share").
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
KV=$(uname -r)
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p inet_diag tcp_diag; do
  [ -f /lib/modules/$KV/$m.ko ] && insmod /lib/modules/$KV/$m.ko 2>/dev/null
done
R=/newroot
mkdir -p $R
O=trans=virtio,version=9p2000.L,msize=262144
# cache=loose keeps one inode per file: landlock rules name inodes, and
# uncached 9p would hand out a fresh inode on every lookup.
if ! mount -t 9p -o $O,ro,cache=loose hostroot $R; then
  echo "AGENTD-VM: cannot mount the host root over 9p"
  poweroff -f
fi
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
# devtmpfs has no /dev/pts: make it, so ptys (the terminal tests) work in the guest.
mkdir -p $R/dev/pts
mount -t devpts -o ptmxmode=0666 devpts $R/dev/pts
mount -t securityfs securityfs $R/sys/kernel/security
mount -t bpf bpf $R/sys/fs/bpf
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tmpfs tmpfs $R/run
# The guest's /tmp is a tmpfs; keep the host's /tmp reachable under /run/host-tmp for a
# work tree that lives there (run.sh binds it back to its own path).
mkdir -p $R/run/host-tmp
mount --bind $R/tmp $R/run/host-tmp
mount -t tmpfs tmpfs $R/tmp
mkdir -p $R/tmp/vmwork $R/run/lock
mount -t 9p -o $O share $R/tmp/vmwork
# Loopback: the network tests use 127.0.0.1 and ::1 only.
ip link set lo up
echo "AGENTD-VM: kernel $KV; LSMs $(cat $R/sys/kernel/security/lsm)"
chroot $R /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  /bin/sh /tmp/vmwork/run.sh > $R/tmp/vmwork/output.log 2>&1
echo $? > $R/tmp/vmwork/exitcode
sync
echo "AGENTD-VM: done rc=$(cat $R/tmp/vmwork/exitcode)"
poweroff -f
