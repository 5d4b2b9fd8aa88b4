"""Bounded defaults, each overridable: /tmp and /dev/shm sizes, the scratch layer's size."""

from __future__ import annotations

import pytest

from tests.linux.conftest import needs_root, run, sh

pytestmark = needs_root

SIZES = "df -k /tmp /dev/shm | awk 'NR > 1 {print $6, $2}'"


def mem_total_kib() -> int:
    with open("/proc/meminfo") as f:
        return int(next(line.split()[1] for line in f if line.startswith("MemTotal:")))


def sizes(out: str) -> dict[str, int]:
    return {point: int(kib) for point, kib in (line.split() for line in out.splitlines())}


def test_tmp_is_a_tenth_of_memory_and_shm_64_mib_by_default(clean):
    r = run(sh(SIZES))
    assert r.code == 0, r.err
    got = sizes(r.out)
    assert got["/dev/shm"] == 64 * 1024
    assert abs(got["/tmp"] - mem_total_kib() // 10) <= 4  # tmpfs rounds to pages
    r = run(sh(SIZES, tmp_size_mb=32, shm_size_mb=8))
    assert sizes(r.out) == {"/tmp": 32 * 1024, "/dev/shm": 8 * 1024}


@pytest.mark.parametrize("private_users", ["no", "pick"])
def test_a_scratch_size_bounds_what_the_root_takes(private_users, clean):
    """The upper layer in a tmpfs of its own, in init's mount namespace only (clean() checks the
    host's mount table), full at the size asked; with private users, made by the namespace's root."""
    write = "dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null; echo rc=$?; ls -s --block-size=1M /big | cut -d' ' -f1"
    r = run(sh(write, scratch_size_mb=16, private_users=private_users))
    assert r.code == 0, r.err
    rc, used = r.out.split()
    assert rc != "rc=0" and int(used) <= 16, r.out
    r = run(sh(write))  # on disk: the default, unbounded
    rc, used = r.out.split()
    assert rc == "rc=0" and int(used) >= 64, (r.out, r.err)  # a file system may allocate a block more


def test_an_in_memory_scratch_counts_in_the_memory_limit(clean):
    """The review wrote 2 GiB to its root under a 100 MiB memory limit: with scratch_size_mb the
    root's writes are memory of the container's, and the limit ends them."""
    r = run(sh("dd if=/dev/zero of=/big bs=1M count=200 2>/dev/null; echo wrote", scratch_size_mb=512, max_ram_mb=64))
    assert r.code == 137 and r.result.oom_killed and "wrote" not in r.out
