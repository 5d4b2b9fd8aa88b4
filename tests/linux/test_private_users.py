"""private_users: pick: the container's root is an unprivileged host id range of its own, the
mapped directories keep their host owners, and the range is freed however the run ends."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from nspawn.backends.linux import userns
from nspawn.journal import state_dir
from tests.linux.conftest import ROOT, STARTED, container_processes, needs_root, run, sh
from tests.linux.test_rollback import CLEANUP, LAUNCHER, STEPS

pytestmark = needs_root


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    os.chown(d, 1001, 1001)
    return d


def taken(where: str) -> dict[int, str]:
    """The ranges in use in the allocator's directory: first host id -> container id."""
    found = {}
    for name in os.listdir(where) if os.path.isdir(where) else ():
        if name.isdigit():
            with open(os.path.join(where, name)) as f:
                found[int(name)] = f.read()
    return found


def ranges() -> dict[int, str]:
    return taken(userns.directory(state_dir()))


def _host_view(token: str) -> list[str]:
    """The Uid and Gid lines of the host's view of the container process running `token`."""
    for cmdline in os.listdir("/proc"):
        try:
            with open(f"/proc/{cmdline}/cmdline", "rb") as f:
                if token.encode() not in f.read() or int(cmdline) == os.getpid():
                    continue
            with open(f"/proc/{cmdline}/status") as f:
                return [line.split()[1:] for line in f if line.startswith(("Uid:", "Gid:"))]
        except (OSError, ValueError):
            continue
    return []


def _background(cfg: dict) -> tuple[threading.Thread, list]:
    box: list = []
    thread = threading.Thread(target=lambda: box.append(run(cfg)))
    thread.start()
    return thread, box


def _wait_for(path, thread, box) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert thread.is_alive(), (box[0].code, box[0].result.error, box[0].err) if box else "no result"
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_root_inside_is_an_unprivileged_range_outside(work, clean):
    token = "pu-root-token"
    script = f"cat /proc/self/uid_map > {work}/map; id -u > {work}/id.tmp; mv {work}/id.tmp {work}/id; while [ ! -e {work}/stop ]; do sleep 0.02; done # {token}"
    thread, box = _background(sh(script, process_directory=str(work), private_users="pick"))
    try:
        _wait_for(work / "id", thread, box)
        (first, outside, size), = [line.split() for line in (work / "map").read_text().splitlines()]
        base = int(outside)
        assert (first, size) == ("0", "65536") and base >= userns.FIRST and (work / "id").read_text() == "0\n"
        assert ranges() == {base: STARTED[-1]}
        assert _host_view(token) == [[str(base)] * 4, [str(base)] * 4]  # real, effective, saved, fs: no host root
    finally:
        (work / "stop").touch()  # a failed check must not leave the container running
        thread.join(20)
    assert box[0].code == 0, box[0].err
    assert ranges() == {}  # released with the run


def test_mapped_files_keep_their_host_owners_and_capabilities_stay_inside(work, clean):
    (work / "theirs").write_text("x")
    os.chown(work / "theirs", 1001, 1001)
    r = run(sh("stat -c '%u:%g' theirs; touch by-root; echo hi >> theirs; rm -r /etc/apt && echo layer-ok",
               process_directory=str(work), private_users="pick"))
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["1001:1001", "layer-ok"]
    assert (os.stat(work / "by-root").st_uid, os.stat(work / "theirs").st_uid) == (0, 1001)
    assert (work / "theirs").read_text() == "xhi\n"
    r = run(sh("id -u; touch by-user; grep CapEff /proc/self/status", process_directory=str(work),
               private_users="pick", user="1001"))
    assert r.code == 0 and r.out.splitlines() == ["1001", "CapEff:\t0000000000000000"], r.err
    assert os.stat(work / "by-user").st_uid == 1001
    assert os.path.exists("/etc/apt")


def test_two_live_containers_get_disjoint_ranges(tmp_path, clean):
    runs = []
    try:
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            script = f"cat /proc/self/uid_map > {d}/map.tmp; mv {d}/map.tmp {d}/map; while [ ! -e {d}/stop ]; do sleep 0.02; done"
            runs.append((d, *_background(sh(script, process_directory=str(d), private_users="pick"))))
        for d, thread, box in runs:
            _wait_for(d / "map", thread, box)
        bases = [int((d / "map").read_text().split()[1]) for d, _, _ in runs]
        assert abs(bases[0] - bases[1]) >= userns.SIZE and sorted(ranges()) == sorted(bases)
    finally:
        for d, thread, _ in runs:
            (d / "stop").touch()
            thread.join(20)
    assert [box[0].code for _, _, box in runs] == [0, 0], [box[0].err for _, _, box in runs]
    assert ranges() == {}


def test_sigkill_of_the_launcher_then_cleanup_frees_the_range(work, clean):
    cfg = sh(f"echo up > {work}/up; sleep 30", process_directory=str(work), private_users="pick")
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps(cfg)], cwd=ROOT)
    deadline = time.monotonic() + 20
    while not (work / "up").exists():
        assert time.monotonic() < deadline and launcher.poll() is None
        time.sleep(0.01)
    assert len(ranges()) == 1
    launcher.kill()
    assert launcher.wait(10) == -signal.SIGKILL
    while container_processes(os.environ["NSPAWN_SCRATCH_DIR"]):
        assert time.monotonic() < deadline, "the container outlived its launcher"
        time.sleep(0.01)
    assert len(ranges()) == 1  # nothing frees it but cleanup
    STARTED.extend(ranges().values())
    cleanup = subprocess.run([sys.executable, "-c", CLEANUP], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert cleanup.returncode == 0 and cleanup.stdout.strip() == "[]", cleanup.stderr
    assert ranges() == {}


def test_a_directory_whose_filesystem_cannot_be_id_mapped_is_said(clean):
    r = run(sh("true", private_users="pick", mounts=[{"host_path": "/sys/kernel", "container_path": "/k", "read_only": True}]))
    assert r.code == 125
    assert "private_users: /sys/kernel cannot be mapped into the container with its owners: its filesystem cannot be id-mapped" in r.result.error
    assert ranges() == {}


def _take(where: str, owner: str, out) -> None:
    out.put(userns.allocate(where, owner))


def test_concurrent_launchers_never_share_a_range_and_each_releases_only_its_own(tmp_path):
    where = str(tmp_path / "ranges")
    queue = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_take, args=(where, f"c{i}", queue)) for i in range(8)]
    for p in procs:
        p.start()
    bases = sorted(queue.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(10)
    assert bases == [userns.FIRST + i * userns.SIZE for i in range(8)]
    owners = taken(where)
    assert sorted(owners.values()) == sorted(f"c{i}" for i in range(8))
    (freed,) = [base for base, owner in owners.items() if owner == "c3"]
    userns.release_range({"directory": where, "owner": "c3"})
    assert sorted(taken(where)) == [b for b in bases if b != freed]
    assert userns.allocate(where, "c9") == freed  # the freed range is taken again
    assert os.listdir(where) and not [n for n in os.listdir(where) if n.startswith(".")]  # no claim left behind


def test_with_the_hosts_network_sys_is_the_hosts_read_only(clean):
    """A sysfs belongs to the network namespace it is mounted for: the host's, bound read-only."""
    r = run(sh("ls /sys/class/net; touch /sys/x 2>/dev/null || echo sys-ro; echo $(ls /sys/fs/cgroup); "
               "cat /sys/fs/cgroup/pids/pids.max", private_users="pick", network="host", max_processes=7))
    assert r.code == 0, r.err
    *interfaces, ro, groups, pids_max = r.out.splitlines()
    assert sorted(interfaces) == sorted(os.listdir("/sys/class/net")) and ro == "sys-ro"
    # The host's cgroup tree stays covered: the container's own groups only, the process limit
    # its own (the payload's 7, init, and the first process that joined)
    assert groups.split() == ["devices", "pids"] and pids_max == "9", r.out


def test_read_only_directories_and_mapped_files_stay_read_only(tmp_path, work, clean):
    mine = tmp_path / "resolv.conf"
    mine.write_text("nameserver 203.0.113.7\n")
    r = run(sh("cat /etc/resolv.conf; touch x 2>/dev/null || echo dir-ro; (echo y > /etc/resolv.conf) 2>/dev/null || echo file-ro",
               process_directory=str(work), mapped_directory_read_only=True, private_users="pick",
               mounts=[{"host_path": str(mine), "container_path": "/etc/resolv.conf", "read_only": True}]))
    assert r.code == 0, r.err
    assert r.out.splitlines() == ["nameserver 203.0.113.7", "dir-ro", "file-ro"]
    assert os.listdir(work) == [] and mine.read_text() == "nameserver 203.0.113.7\n"


@pytest.mark.parametrize("step", ["private-users"] + STEPS)
def test_a_failure_at_each_setup_step_frees_the_range_and_leaves_nothing(step, work, monkeypatch, clean):
    monkeypatch.setenv("NSPAWN_FAIL_AT", step)
    r = run(sh("echo ran", process_directory=str(work), stdout_filename="log.txt", max_ram_mb=64, max_processes=20,
               private_users="pick"))
    assert r.code == 125 and f"failure injected at {step}" in r.result.error
    assert r.result.rollback_failures == [] and "ran" not in r.out
    assert ranges() == {}
