"""The Linux limits table (nspawn/backends/linux/limits.py) and the verdict read from it: the
files a run writes, what it reports and what doctor says, for each layout. Pure, so these run
anywhere."""

from __future__ import annotations

import collections

import pytest

from nspawn.backends.linux import cgroups, enforcement, limits
from nspawn.backends.linux.limits import NO_SWAP, SWAP_ESCAPES, SWAP_LIMITED, Facts
from nspawn.backends.linux.plan import DEFAULT_MAX_PROCESSES
from nspawn.config.model import Limits
from tests.linux.test_plan import make

EVERY = {"max_ram_mb": 64, "max_cpu_percent": 50, "cpu_affinity_hex": "0x6", "cpus_count": 1, "max_storage_iops": 7,
         "max_storage_bandwidth_bytes_per_sec": 4096, "max_processes": 3}
ALL = ["memory", "cpu", "cpuset", "io", "pids"]


@pytest.fixture
def every():
    return make(**EVERY)


def test_every_limit_is_one_controllers_and_only_one():
    counts = collections.Counter(field for c in limits.CONTROLLERS for field in c.fields)
    assert set(counts) == set(Limits._fields) and set(counts.values()) == {1}, counts
    assert len({c.name for c in limits.CONTROLLERS}) == len(limits.CONTROLLERS)


def test_the_controllers_a_plan_needs(every):
    assert limits.needed(every.limits) == ALL
    assert limits.needed(make().limits) == ["pids"]  # the default process limit
    assert make().limits.pids_max == DEFAULT_MAX_PROCESSES + 1
    assert limits.needed(make(max_storage_bandwidth_bytes_per_sec=1, max_processes=1).limits) == ["io", "pids"]


def test_v2_files(every):
    quota = every.limits.cpu_quota_us
    facts = Facts(2, ("8:0", "8:16"), swap=SWAP_LIMITED)
    assert limits.settings(every.limits, ALL, facts) == [
        ("memory", "memory.max", str(64 << 20)), ("memory", "memory.swap.max", "0"),
        ("cpu", "cpu.max", f"{quota} 100000"),
        ("cpuset", "cpuset.cpus", "1"),
        ("io", "io.max", "8:0 riops=7 wiops=7 rbps=4096 wbps=4096"), ("io", "io.max", "8:16 riops=7 wiops=7 rbps=4096 wbps=4096"),
        ("pids", "pids.max", "4"),
    ]
    assert ("memory", "memory.swap.max", "0") not in limits.settings(every.limits, ALL, facts._replace(swap=NO_SWAP))


def test_v1_files_in_the_order_the_kernel_takes_them(every):
    facts = Facts(1, ("8:0",), parent_mems="0-1", swap=SWAP_LIMITED)
    assert limits.settings(every.limits, ALL, facts) == [
        ("memory", "memory.limit_in_bytes", str(64 << 20)), ("memory", "memory.memsw.limit_in_bytes", str(64 << 20)),
        ("cpu", "cpu.cfs_period_us", "100000"), ("cpu", "cpu.cfs_quota_us", str(every.limits.cpu_quota_us)),
        ("cpuset", "cpuset.mems", "0-1"), ("cpuset", "cpuset.cpus", "1"),
        ("io", "blkio.throttle.read_iops_device", "8:0 7"), ("io", "blkio.throttle.write_iops_device", "8:0 7"),
        ("io", "blkio.throttle.read_bps_device", "8:0 4096"), ("io", "blkio.throttle.write_bps_device", "8:0 4096"),
        ("pids", "pids.max", "4"),
    ]
    assert limits.settings(every.limits, ["pids"], facts) == [("pids", "pids.max", "4")]


def test_what_a_run_reports(every):
    asked = every.asked.asked()
    applied, failed, caveats = limits.outcome(every.limits, asked, ALL, Facts(2, ("8:0",), swap=SWAP_LIMITED))
    assert applied == {
        "max_ram_mb": f"{64 << 20} bytes of resident memory (memory.max), swap included",
        "max_cpu_percent": f"{every.limits.cpu_quota_us}us per 100000us",
        "cpus_count": "CPUs 1", "cpu_affinity": "CPUs 1",
        "max_storage_iops": 7, "max_storage_bandwidth_bytes_per_sec": 4096,
        "max_processes": "pids.max=4, the container's init included",
    }
    assert failed == {} and caveats == []
    _, _, caveats = limits.outcome(every.limits, asked, ALL, Facts(1, ("8:0",), "0", SWAP_LIMITED))
    assert caveats == [limits.V1_BUFFERED_WRITES]


def test_only_the_asked_fields_are_reported():
    one = make(cpus_count=1, max_storage_iops=5)
    applied, _, _ = limits.outcome(one.limits, one.asked.asked(), ["cpuset", "io"], Facts(2, ("8:0",)))
    assert applied == {"cpus_count": "CPUs 0", "max_storage_iops": 5}


def test_swap_decides_whether_the_memory_limit_holds():
    memory = make(max_ram_mb=64)
    asked = memory.asked.asked()

    def said(version, swap):
        return limits.outcome(memory.limits, asked, ["memory"], Facts(version, swap=swap))[:2]

    assert said(2, NO_SWAP) == ({"max_ram_mb": f"{64 << 20} bytes of resident memory (memory.max) (no swap on this host)"}, {})
    assert said(1, SWAP_LIMITED)[0] == {"max_ram_mb": f"{64 << 20} bytes of resident memory (memory.limit_in_bytes), swap included"}
    assert said(2, SWAP_ESCAPES) == ({}, {"max_ram_mb": "memory.swap.max is missing (swap accounting is off) and swap is on, "
                                                        "so the container can swap past 64 MiB"})
    assert said(1, SWAP_ESCAPES)[1]["max_ram_mb"].startswith("memory.memsw.limit_in_bytes is missing")


def test_what_doctor_says_of_each_controller():
    says = {c.name: c for c in limits.CONTROLLERS}
    assert says["memory"].host_report(Facts(2, swap=SWAP_LIMITED)) == (
        True, f"enforces max_ram_mb; {limits.RESIDENT_MEANING}; swap is limited too")
    assert limits.RESIDENT_MEANING.startswith("it limits resident memory: allocations beyond it succeed")
    assert says["memory"].host_report(Facts(1, swap=NO_SWAP)) == (
        True, f"enforces max_ram_mb; {limits.RESIDENT_MEANING}; memory.memsw.limit_in_bytes is missing but there is no swap to escape to")
    assert says["memory"].host_report(Facts(2, swap=SWAP_ESCAPES)) == (
        False, "memory.swap.max is missing and swap is on: a container could swap past max_ram_mb")
    assert says["cpu"].host_report(Facts(2)) == (True, "enforces max_cpu_percent")
    assert says["cpuset"].host_report(Facts(1)) == (True, "enforces cpus_count, cpu_affinity; sched_setaffinity makes the payload see it")
    assert says["io"].host_report(Facts(2)) == (True, "enforces max_storage_iops, max_storage_bandwidth_bytes_per_sec")
    assert says["io"].host_report(Facts(1)) == (
        True, "enforces max_storage_iops, max_storage_bandwidth_bytes_per_sec; " + limits.V1_BUFFERED_WRITES)
    assert says["pids"].host_report(Facts(2)) == (True, "enforces max_processes")


def test_the_verdict_refuses_the_fields_of_a_missing_controller():
    layout = cgroups.Layout(1, None, "/", {"memory": "/sys/fs/cgroup/memory", "cpuset": "/sys/fs/cgroup/cpuset"})
    asked = make(max_ram_mb=64, cpu_affinity_hex="0x1", max_cpu_percent=10, max_processes=2)
    verdict = enforcement.judge(asked, layout, limits.needed(asked.limits))
    assert verdict.controllers == ["memory", "cpuset"] and verdict.devices == ()
    why = f"the {{}} controller is not available in {layout.describe()}"
    assert verdict.not_enforced == {"max_cpu_percent": why.format("cpu"), "max_processes": why.format("pids")}


def test_groups_are_keyed_by_their_v1_hierarchy_or_the_one_v2_group():
    v1 = cgroups.Layout(1, None, "/", {"blkio": "/sys/fs/cgroup/blkio/own", "memory": "/sys/fs/cgroup/memory/own"})
    assert cgroups.group_key(v1, "io") == "blkio" and cgroups.group_key(v1, "memory") == "memory"
    assert cgroups.directories(v1, ["io"], "c1") == {"blkio": "/sys/fs/cgroup/blkio/own/c1"}
    assert cgroups.group_key(cgroups.Layout(2, "/sys/fs/cgroup"), "io") == cgroups.UNIFIED
