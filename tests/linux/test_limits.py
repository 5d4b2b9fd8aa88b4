"""Limits, measured from the kernel's own accounting."""

from __future__ import annotations

import glob
import os
import threading
import time

import pytest

from nspawn.backends.linux import cgroups
from nspawn.backends.linux.plan import DEFAULT_MAX_PROCESSES
from nspawn.session import new_container_id
from tests.linux.conftest import needs_root, run, sh

pytestmark = needs_root

# Two processes busy for a while; the parent prints the CPU time both used (the kernel's
# accounting, through times()) and the wall time it took.
BUSY_TWO_CPUS = ("import os, time\nstart, before = time.time(), os.times()\nchild = os.fork()\n"
                 "while time.time() < start + {seconds}: pass\nif child == 0: os._exit(0)\nos.waitpid(child, 0)\n"
                 "after = os.times()\nused = sum(after[:4]) - sum(before[:4])\nprint(used, time.time() - start)\n")


def py(code: str, **overrides) -> dict:
    return {"process_executable": "/usr/bin/python3", "process_arguments": ["-c", code], **overrides}


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return d


def test_without_limits_a_run_gets_the_default_groups_only(clean):
    """The device group, and the default process limit's (plan.DEFAULT_MAX_PROCESSES), which is
    not reported as asked."""
    r = run(sh("cat /sys/fs/cgroup/pids/pids.max"))
    groups = [x for x in r.result.rolled_back if x.startswith("cgroup")]
    assert r.code == 0 and len(groups) == 2, r.result.rolled_back
    assert any("/devices/" in g for g in groups) and any("/pids/" in g for g in groups)
    assert r.out.strip() == str(DEFAULT_MAX_PROCESSES + 1)
    assert r.result.limits_applied == {} and r.result.limits_not_enforced == {}


def test_memory_limit_kills_a_larger_allocation(clean):
    r = run(py("b = bytearray(200 * 2**20); print('survived')", max_ram_mb=64))
    assert r.code == 137 and r.result.oom_killed and r.result.signal == 9
    assert "survived" not in r.out
    assert r.result.one_line().startswith("the memory limit was hit (at 64 MiB)"), r.result.one_line()
    assert 0 < r.result.peak_memory_bytes <= 64 * 2**20
    assert "max_ram_mb" in r.result.limits_applied  # swap included, or no swap at all


def test_memory_limit_is_on_resident_memory_not_on_allocations(clean):
    """What limits_applied and doctor say: an allocation beyond the limit succeeds; the
    pages count when touched (Windows limits commit: there the allocation fails)."""
    r = run(py("import mmap; m = mmap.mmap(-1, 512 * 2**20); print('allocated')", max_ram_mb=64))
    assert (r.code, r.out) == (0, "allocated\n"), r.err
    assert r.result.limits_applied["max_ram_mb"].startswith(f"{64 << 20} bytes of resident memory (memory.")


def test_cpu_percent_is_a_share_of_the_whole_host(clean):
    r = run(py(BUSY_TWO_CPUS.format(seconds=3), max_cpu_percent=25))
    assert r.code == 0 and r.result.limits_applied["max_cpu_percent"], r.err
    used, wall = map(float, r.out.split())
    share = used / (wall * os.cpu_count()) * 100
    assert 20 <= share <= 30, f"the container used {share:.1f}% of the host"


def test_affinity_and_cpus_count_are_seen_inside(clean):
    show = "grep Cpus_allowed_list /proc/self/status | cut -f2; nproc"
    if os.cpu_count() > 1:
        r = run(sh(show, cpu_affinity_hex="0x2"))
        assert r.out.split() == ["1", "1"] and r.result.limits_applied["cpu_affinity"] == "CPUs 1"
    r = run(sh(show, cpus_count=1))
    assert r.out.split() == ["0", "1"] and r.result.limits_applied["cpus_count"] == "CPUs 0"


def _dd_seconds(work, **limits) -> float:
    r = run(sh("dd if=/dev/zero of=/work/f bs={bs} count={count} oflag=direct 2>&1 >/dev/null | tail -1".format(**limits.pop("dd")),
               process_directory=str(work), mapped_directory="/work", **limits))
    assert r.code == 0, r.out + r.err
    return r.result.timings["run"]


def test_direct_writes_are_held_to_the_iops_limit(work, clean):
    fast = _dd_seconds(work, dd={"bs": 4096, "count": 60})
    slow = _dd_seconds(work, dd={"bs": 4096, "count": 60}, max_storage_iops=20)
    # 60 writes at 20 per second: about 3 s (the kernel lets a first slice through).
    assert slow >= 2.0 and slow > fast * 3, (fast, slow)


def test_direct_writes_are_held_to_the_bandwidth_limit(work, clean):
    slow = _dd_seconds(work, dd={"bs": 65536, "count": 32}, max_storage_bandwidth_bytes_per_sec=1024 * 1024)
    assert slow >= 1.5  # 2 MiB at 1 MiB/s


def test_forks_are_refused_past_the_process_limit(clean):
    code = ("import os, time\nmade = 0\nfor _ in range(10):\n    try:\n        pid = os.fork()\n    except BlockingIOError:\n"
            "        continue\n    if pid == 0:\n        time.sleep(1); os._exit(0)\n    made += 1\nprint(made)")
    r = run(py(code, max_processes=5))
    # the payload counts itself: 4 more fit in 5.
    assert r.code == 0 and r.out.strip() == "4", r.out + r.err


def test_a_limit_the_host_cannot_enforce_is_reported(monkeypatch, clean):
    real = cgroups.Layout.available
    monkeypatch.setattr(cgroups.Layout, "available", lambda self, c: c != "pids" and real(self, c))
    r = run({"process_executable": "/bin/true", "max_processes": 5, "max_ram_mb": 64})
    assert r.code == 0 and "max_processes" in r.result.limits_not_enforced
    assert "max_ram_mb" in r.result.limits_applied
    assert any("max_processes is not enforced" in w for w in r.warnings())


def test_the_oom_killer_spares_init_where_the_launcher_may_say_so(clean):
    own = open("/proc/self/oom_score_adj").read().strip()
    effective = next(int(line.split()[1], 16) for line in open("/proc/self/status") if line.startswith("CapEff:"))
    sys_resource = bool(effective >> 24 & 1)  # CAP_SYS_RESOURCE: needed to lower a score
    r = run(sh("cat /proc/1/oom_score_adj /proc/self/oom_score_adj", max_ram_mb=64))
    assert r.code == 0, r.err
    assert r.out.split() == ["-1000" if sys_resource else own, own]


def test_init_and_payload_and_nothing_else_are_in_every_group_the_run_made(clean):
    """Init joins each group as one thread (v1) or is forked into it (v2), and its children follow
    it into every hierarchy; the process that forked init stays out, as pids.max counts."""
    every = {"max_ram_mb": 256, "max_cpu_percent": 50, "cpus_count": 1, "max_processes": 64}
    cid, done, members = new_container_id(), [], {}
    script = "cat /proc/1/cgroup; echo --; cat /proc/self/cgroup; exec sleep 1"
    worker = threading.Thread(target=lambda: done.append(run(sh(script, **every), container_id=cid)))
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            procs = glob.glob(f"/sys/fs/cgroup/**/{cid}/cgroup.procs", recursive=True)
            members = {path: sorted(_comm(pid) for pid in open(path).read().split()) for path in procs}
            if members and all("sleep" in names for names in members.values()):
                break
            time.sleep(0.02)
    finally:
        worker.join(30)
    init = _comm(str(os.getpid()))  # init is a fork of this process, under its name
    assert members and all(names == sorted([init, "sleep"]) for names in members.values()), members
    r = done[0]
    assert r.code == 0, r.err
    made = {x.split(" ", 1)[1] for x in r.result.rolled_back if x.startswith("cgroup ")}
    assert made == {os.path.dirname(path) for path in members}
    # Inside, the cgroup namespace shows each of those groups as the root.
    for listing in r.out.split("--"):
        assert listing.split() and all(line.endswith(":/") for line in listing.split()), listing


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return "gone"


@pytest.fixture
def v2_group():
    """A fresh, empty cgroup v2 group (on a v1 host, in its empty v2 hierarchy)."""
    layout = cgroups.detect()
    if layout.v2_mount is None:
        pytest.skip("this host mounts no cgroup v2 hierarchy")
    group = os.path.join(layout.v2_base() if layout.version == 2 else layout.v2_mount, "nspawn-test-" + new_container_id())
    os.mkdir(group)
    yield group
    os.rmdir(group)


def _in_child(action) -> str:
    """What `action()` returns, run in a forked child: the clone3 wrapper is for single-threaded
    processes, and the fallback moves the process that runs it, neither of which pytest is."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, str(action()).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        said = f.read()
    os.waitpid(pid, 0)
    return said


def _group_line(group: str) -> str:
    """The line /proc/PID/cgroup shows for a process in the v2 `group`."""
    return "0::/" + os.path.relpath(group, cgroups.detect().v2_mount)


def _in_group(group: str) -> bool:
    with open("/proc/self/cgroup") as f:
        return _group_line(group) in f.read().splitlines()


def test_a_child_forked_into_a_v2_group_starts_there_with_a_working_interpreter(v2_group):
    import errno
    import subprocess

    from nspawn.backends.linux import libc

    def fork_into() -> str:
        fd = os.open(v2_group, os.O_RDONLY | os.O_DIRECTORY)
        try:
            pid = libc.fork_into_cgroup(fd)
        except OSError as e:
            return "unsupported" if e.errno in (errno.ENOSYS, errno.E2BIG) else repr(e)
        if pid == 0:
            code = 1
            try:  # the interpreter's after-fork work: threads and forks work in the child
                seen = []
                t = threading.Thread(target=lambda: seen.append(_in_group(v2_group)))
                t.start()
                t.join()
                shown = subprocess.run(["cat", "/proc/self/cgroup"], capture_output=True, text=True).stdout
                code = 0 if seen == [True] and _group_line(v2_group) in shown.splitlines() else 3
            finally:
                os._exit(code)
        return f"{os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])} {_in_group(v2_group)}"

    said = _in_child(fork_into)
    if said == "unsupported":
        pytest.skip("this kernel has no clone3 with CLONE_INTO_CGROUP (Linux 5.7)")
    assert said == "0 False"  # the child was in the group, its parent never


@pytest.mark.parametrize("refusal", ["ENOSYS", "E2BIG", "EPERM", "EINVAL"])
def test_without_clone3_init_joins_the_v2_group_itself_and_its_parent_stays_out(v2_group, monkeypatch, refusal):
    """The fallback for kernels before 5.7 and for seccomp filters that refuse clone3."""
    import errno

    from nspawn.backends.linux import init, libc

    def refused(fd):
        raise OSError(getattr(errno, refusal), "clone3 refused")

    def fork_and_join() -> str:
        monkeypatch.setattr(libc, "fork_into_cgroup", refused)
        pid, in_groups = init._fork_init(v2_group)
        if pid == 0:
            init._join([os.path.join(v2_group, "cgroup.procs")])
            os._exit(0 if _in_group(v2_group) and not in_groups else 3)
        return f"{os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])} {in_groups} {_in_group(v2_group)}"

    assert _in_child(fork_and_join) == "0 False False"
