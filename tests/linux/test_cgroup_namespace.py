"""The payload's cgroups: a cgroup namespace rooted at the container's own groups, and
/sys/fs/cgroup holding only those hierarchies, read-only. The review's payload raised its own
memory limit through cgroupfs and froze a host group outside its container."""

from __future__ import annotations

from tests.linux.conftest import needs_root, run, sh

pytestmark = needs_root


def test_the_payload_sees_its_own_groups_as_the_root_and_cannot_change_them(clean):
    r = run(sh("cat /proc/self/cgroup; echo limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
               "echo -1 > /sys/fs/cgroup/memory/memory.limit_in_bytes && echo raised; "
               "echo subgroups=$(find /sys/fs/cgroup/memory -mindepth 1 -type d | wc -l); "
               "echo hierarchies=$(ls /sys/fs/cgroup)",
               max_ram_mb=64))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    memberships = [line for line in lines if line[:1].isdigit()]
    assert memberships and all(line.endswith(":/") for line in memberships), r.out
    assert f"limit={64 << 20}" in lines
    assert "raised" not in r.out and "Read-only file system" in r.err
    assert "subgroups=0" in lines  # nothing of the host's tree, no other container's group
    hierarchies = next(line for line in lines if line.startswith("hierarchies=")).split("=")[1].split()
    assert "memory" in hierarchies and not {"freezer", "systemd", "cpuacct"} & set(hierarchies), r.out


def test_a_run_without_groups_sees_no_cgroup_tree_and_cannot_make_one(clean):
    r = run(sh("echo entries=$(ls -A /sys/fs/cgroup | wc -l); mkdir /sys/fs/cgroup/x && echo made"))
    assert "made" not in r.out and "Read-only file system" in r.err
