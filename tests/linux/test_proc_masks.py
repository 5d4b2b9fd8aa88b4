"""/proc and /sys as Docker leaves them: its masked paths covered, its read-only paths
read-only, and neither undone by the payload, even from a user namespace of its own."""

from __future__ import annotations

import os

import pytest

from nspawn.backends.linux import mounts
from tests.linux.conftest import needs_root, run, sh

pytestmark = needs_root

LOOK = r"""
for p in /proc/keys /proc/timer_list /proc/sched_debug /proc/kcore /proc/latency_stats /proc/timer_stats; do
  [ -e $p ] && echo "$p bytes=$(cat $p 2>/dev/null | wc -c)"
done
for d in /proc/acpi /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
  [ -e $d ] && echo "$d entries=$(ls -A $d | wc -l)"
done
echo '|/bin/true' > /proc/sys/kernel/core_pattern 2>/dev/null && echo "core_pattern written"
echo 1 > /proc/sys/vm/overcommit_memory 2>/dev/null && echo "overcommit written"
[ -e /proc/sysrq-trigger ] && { echo h > /proc/sysrq-trigger 2>/dev/null && echo "sysrq written"; }
umount /proc/keys 2>/dev/null && echo "keys unmounted"
umount -l /sys/firmware 2>/dev/null && echo "firmware unmounted"
mount -o remount,rw /proc/sys 2>/dev/null && echo "sys remounted"
mount -t proc proc /mnt 2>/dev/null && echo "proc mounted"
true
"""


def seen(out: str) -> set[str]:
    return set(out.splitlines())


def host_sysctl(name: str) -> str:
    with open(f"/proc/sys/{name}") as f:
        return f.read()


@pytest.mark.parametrize("seccomp", ["default", "unconfined"])
def test_masked_and_read_only_paths_hold(seccomp, clean):
    """Unconfined, the payload may make a user namespace (unshare -rm) in which it is root with
    every capability: the masks are locked mounts there, which it can neither remove nor see
    past with a fresh /proc."""
    before = host_sysctl("kernel/core_pattern"), host_sysctl("vm/overcommit_memory")
    script = LOOK if seccomp == "default" else f"unshare -rm sh -c '{LOOK.replace(chr(39), chr(34))}'"
    r = run(sh(script, seccomp=seccomp))
    assert r.code == 0, r.err
    lines = seen(r.out)
    assert not any("written" in line or "mounted" in line or "remounted" in line for line in lines), lines
    for line in lines:
        if "bytes=" in line:
            assert line.endswith("bytes=0"), line
        elif "entries=" in line:
            assert line.endswith("entries=0"), line
    assert "/proc/keys bytes=0" in lines and "/sys/firmware entries=0" in lines
    assert (host_sysctl("kernel/core_pattern"), host_sysctl("vm/overcommit_memory")) == before


def test_the_mounts_are_read_only_and_present(clean):
    r = run(sh("cat /proc/self/mountinfo"))
    assert r.code == 0, r.err
    options = {line.split()[4]: line.split()[5].split(",") for line in r.out.splitlines()}
    for path in mounts.READ_ONLY:
        if os.path.exists(path):
            assert "ro" in options[path], path
    for path in mounts.MASKED:
        if os.path.exists(path):
            assert path in options, path
