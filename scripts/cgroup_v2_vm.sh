#!/usr/bin/env bash
# Developer tool, not part of CI: runs the Linux backend's root tests (tests/linux and
# tests/batch/test_linux.py) on a pure cgroup v2 kernel, which a cgroup v1 host cannot offer.
# Boots Debian's kernel in qemu with cgroup_no_v1=all; the guest's root is this host's / shared
# read-only over 9p (so it uses this checkout and its .venv), /tmp is an ext4 disk (a block
# device, so io.max is set), and pytest runs in /test.slice/pytest.scope below a root whose
# subtree_control enables every controller, as under systemd (V2VM_AT_ROOT=1: in the root group).
# Run as root on Debian 12; prints the pytest output and exits with pytest's code.
# Environment: V2VM_DIR (work directory, /var/tmp/v2vm), V2VM_KERNEL (6.1.0-47-amd64),
# V2VM_TESTS (the pytest arguments).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${V2VM_DIR:-/var/tmp/v2vm}
kver=${V2VM_KERNEL:-6.1.0-47-amd64}
tests=${V2VM_TESTS:-tests/linux tests/batch/test_linux.py}
mkdir -p "$work" && cd "$work"

missing=0
for tool in qemu-system-x86_64 depmod cpio mke2fs; do command -v "$tool" >/dev/null || missing=1; done
[ -x /bin/busybox ] || missing=1
if [ "$missing" = 1 ]; then
    apt-get update -qq && apt-get install -y -qq qemu-system-x86 busybox-static cpio kmod e2fsprogs >/dev/null
fi
if [ ! -f "kernel/boot/vmlinuz-$kver" ]; then
    apt-get download "linux-image-$kver"
    dpkg-deb -x linux-image-"$kver"_*.deb kernel
    depmod -b kernel "$kver"
fi

# The initramfs: busybox and the modules needed to mount the shares, the disk and overlays.
mods=kernel/lib/modules/$kver
rm -rf initrd && mkdir -p initrd/bin initrd/proc initrd/sys initrd/dev initrd/root "initrd/lib/modules/$kver"
cp /bin/busybox initrd/bin/
cp "$mods"/modules.dep "$mods"/modules.alias "$mods"/modules.builtin "initrd/lib/modules/$kver/"
for m in 9p 9pnet_virtio virtio_pci virtio_blk ext4 crc32c_generic overlay; do
    grep -E "/$m\.ko:" "$mods/modules.dep" | tr -d : | tr ' ' '\n'
done | sort -u | while read -r ko; do
    install -D "$mods/$ko" "initrd/lib/modules/$kver/$ko"
done
cat > initrd/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs dev /dev
modprobe -a virtio_pci 9pnet_virtio 9p virtio_blk crc32c_generic ext4 overlay
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=1048576,cache=loose hostroot /root
mount -t tmpfs tmpfs /root/run && mkdir /root/run/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 out /root/run/out
mount -t ext4 /dev/vda /root/tmp && chmod 1777 /root/tmp
mount -t tmpfs tmpfs /root/var/tmp
cat /proc/mounts
exec switch_root /root /bin/sh /run/out/guest.sh
EOF
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc --quiet | gzip -1) > initrd.gz

# What the guest runs once its filesystems are in place; it writes to the shared out/.
rm -rf out && mkdir out
cat > out/guest.sh <<EOF
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs dev /dev
mount -t cgroup2 cgroup2 /sys/fs/cgroup
cd /sys/fs/cgroup && echo "\$(sed 's/^/+/; s/ / +/g' cgroup.controllers)" > cgroup.subtree_control
if [ -z "${V2VM_AT_ROOT:-}" ]; then
    mkdir -p test.slice/pytest.scope && echo \$\$ > test.slice/pytest.scope/cgroup.procs
fi
export HOME=/tmp NSPAWN_STATE_DIR=/run/nspawn-state NSPAWN_CACHE_DIR=/tmp/cache PYTHONDONTWRITEBYTECODE=1
cd "$repo"
{ uname -r; cat /proc/self/cgroup; grep cgroup /proc/self/mountinfo; } > /run/out/env.txt
start=\$(date +%s)
.venv/bin/python -m pytest -q -p no:cacheprovider -rfE $tests > /run/out/pytest.txt 2>&1
echo \$? > /run/out/rc
echo \$(( \$(date +%s) - start )) > /run/out/seconds
sync
echo o > /proc/sysrq-trigger
EOF

truncate -s 4G tmp.img && mke2fs -q -F -t ext4 tmp.img
start=$(date +%s)
timeout 3600 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 4G \
    -nographic -no-reboot -kernel "kernel/boot/vmlinuz-$kver" -initrd initrd.gz \
    -append "console=ttyS0 cgroup_no_v1=all panic=-1 quiet" \
    -fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap -device virtio-9p-pci,fsdev=root,mount_tag=hostroot \
    -fsdev local,id=out,path="$work/out",security_model=none -device virtio-9p-pci,fsdev=out,mount_tag=out \
    -drive file=tmp.img,format=raw,if=virtio > console.log 2>&1 || true
cat out/pytest.txt 2>/dev/null || { tail -n 40 console.log; echo "no test output: see $work/console.log" >&2; exit 1; }
echo "VM run: $(( $(date +%s) - start )) s in all, pytest $(cat out/seconds) s ($work/out)"
exit "$(cat out/rc)"
