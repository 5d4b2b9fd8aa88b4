"""`nspawn doctor` on this host: what it can isolate and enforce, and for a given config."""

from __future__ import annotations

import json
import os
import shutil

from tests.conftest import nspawn
from tests.linux.conftest import needs_root

pytestmark = needs_root


def lines(result) -> dict[str, str]:
    """check -> "ok ..." or "NO ..." line."""
    return {line[4:].split(":", 1)[0]: line for line in result.stdout.splitlines()}


def test_the_host_report_names_every_namespace_and_controller():
    r = nspawn("doctor")
    checks = lines(r)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("root", "mount namespace", "pid namespace", "net namespace", "overlayfs", "private users", "cgroup layout",
                 "memory controller", "cpu controller", "cpuset controller", "io controller", "pids controller", "devices"):
        assert checks[name].startswith("ok "), checks


def test_doctor_on_cgroup_v2_loads_the_device_program():
    """What doctor says of devices on a v2 host, asked of this host's layout as if v2: it loads
    the program, as a run would (the v2 hierarchy need not hold controllers for that)."""
    from nspawn.backends.linux import cgroups, devices

    ok, said = devices.doctor_line(cgroups.detect()._replace(version=2))
    assert ok and "BPF program" in said


def test_a_config_is_judged_with_its_own_root_and_limits(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"process_executable": "/bin/true", "parent_layer_directory": str(root),
                                "max_ram_mb": 64, "max_processes": 10}))
    r = nspawn("doctor", "-c", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"an overlay on {root} mounts" in r.stdout
    checks = lines(r)
    assert checks[f"max_ram_mb (asked by {path})"].startswith("ok ") and checks[f"max_processes (asked by {path})"].startswith("ok ")
    assert not any("cpus_count" in k for k in checks)  # only what the config asks


def test_a_bad_config_is_a_usage_error_not_a_report(tmp_path):
    path = tmp_path / "job.json"
    path.write_text('{"process_executable": "/bin/true", "max_ram_mb": "lots"}')
    r = nspawn("doctor", "-c", str(path))
    assert r.returncode == 2 and "max_ram_mb" in r.stderr and r.stdout == ""


def test_what_doctor_says_of_swap_is_what_a_run_with_a_memory_limit_gets():
    memory = lines(nspawn("doctor"))["memory controller"]
    run = nspawn("run", "--json", "--memory", "64M", "--", "/bin/true")
    applied = json.loads(run.stdout.splitlines()[-1])["limits_applied"]["max_ram_mb"]
    assert ("swap is limited too" in memory) == ("swap included" in applied), (memory, applied)


def test_doctor_and_a_run_judge_each_asked_limit_alike(tmp_path):
    """One verdict serves both: storage limits on a tmpfs root and scratch cannot hold."""
    scratch, root = (f"/dev/shm/nspawn-doctor-{what}-{os.getpid()}" for what in ("scratch", "root"))
    env = {"NSPAWN_SCRATCH_DIR": scratch}
    os.makedirs(root + "/bin")
    shutil.copy("/bin/true", root + "/bin/true")  # lacking its libraries, it fails after the limits are set
    try:
        path = tmp_path / "job.json"
        path.write_text(json.dumps({"process_executable": "/bin/true", "parent_layer_directory": root,
                                    "max_storage_iops": 100, "max_ram_mb": 64}))
        checks = lines(nspawn("doctor", "-c", str(path), env=env))
        result = json.loads(nspawn("run", "--json", "-c", str(path), env=env).stdout.splitlines()[-1])
    finally:
        shutil.rmtree(root)
        shutil.rmtree(scratch, ignore_errors=True)
    assert "not on block devices" in result["limits_not_enforced"]["max_storage_iops"]
    for name in ("max_storage_iops", "max_ram_mb"):
        line = checks[f"{name} (asked by {path})"]
        why = result["limits_not_enforced"].get(name)
        if why is None:
            assert line.startswith("ok ") and name in result["limits_applied"], (line, result)
        else:
            assert line.startswith("NO ") and line.endswith(f"cannot be enforced: {why}"), (line, why)


def test_private_users_say_why_a_root_cannot_be_id_mapped(tmp_path):
    """A root on a filesystem without id-mapped mounts (sysfs here) is said, with the reason."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"process_executable": "/bin/true", "parent_layer_directory": "/sys", "private_users": "pick"}))
    checks = lines(nspawn("doctor", "-c", str(path)))
    assert checks["private users"].startswith("NO ") and "its filesystem cannot be id-mapped" in checks["private users"], checks
