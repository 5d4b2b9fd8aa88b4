"""The Linux plan and the Linux backend's config rules: pure, so these run anywhere."""

from __future__ import annotations

import json
import os

import pytest

from nspawn.backends.linux.plan import CPU_PERIOD_US, LinuxPlan, plan
from nspawn.config.build import build_config


def make(**document) -> LinuxPlan:
    config, findings = build_config({"process_executable": "/bin/true", "backend": "linux", **document}, "test", "/")
    assert findings == []
    return plan(config)


def test_defaults(monkeypatch):
    monkeypatch.setenv("TERM", "vt100")
    p = make()
    env = dict(p.env)
    assert env == {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                   "TERM": "vt100", "container": "nspawn"}
    assert p.cwd == "/" and p.lower_dir == "/" and p.mounts == ()
    assert len(p.hostname) == 8 and int(p.hostname, 16) >= 0
    assert p.namespaces == ("mount", "pid", "uts", "ipc", "net")
    assert p.capability_mask == 0xA80425FB & ~(1 << 27)  # Docker's default set less CAP_MKNOD
    shown = json.loads(json.dumps(p.to_json()))
    assert shown["capability_mask"] == "00000000a00425fb"
    assert shown["devices"][0] == "a" and "c 1:3 rwm" in shown["devices"] and not any(" m" in d for d in shown["devices"])
    assert make(allow_mknod=True).capability_mask == 0xA80425FB


def test_environment_overrides_and_working_directory(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    p = make(environment={"PATH": "/opt/bin", "A": "1"}, process_directory="/srv/app", mapped_directory="/app",
             network="host", hostname="h")
    assert dict(p.env) == {"PATH": "/opt/bin", "LANG": "C.UTF-8", "container": "nspawn", "A": "1"}
    assert p.cwd == "/app" and p.hostname == "h" and "net" not in p.namespaces
    assert make(process_directory="/srv/app", working_directory="/tmp").cwd == "/tmp"


def test_relative_executable_lives_in_the_mapped_directory():
    p = make(process_executable="bin/tool", process_directory="/srv/app", mapped_directory="/app", process_arguments=["x"])
    assert p.executable == "/app/bin/tool" and p.argv == ("/app/bin/tool", "x")
    assert p.host_executable == "/srv/app/bin/tool"
    assert make(process_executable="ls").host_executable is None


def test_mounts_parents_first():
    p = make(process_directory="/srv", mapped_directory="/data/deep/er",
             mounts=[{"host_path": "/a", "container_path": "/data/x/y"}, {"host_path": "/b", "container_path": "/data", "read_only": True}])
    assert [m.target for m in p.mounts] == ["/data", "/data/deep/er", "/data/x/y"]
    assert p.mounts[0].read_only


def test_limits_in_kernel_units():
    p = make(max_ram_mb=64, max_cpu_percent=25, cpu_affinity_hex="0x6", cpus_count=1, max_storage_iops=10,
             max_storage_bandwidth_bytes_per_sec=4096, max_processes=5)
    cpus = os.cpu_count()
    assert p.limits.memory_bytes == 64 * 2**20
    assert p.limits.cpu_quota_us == round(0.25 * cpus * CPU_PERIOD_US)  # a share of the whole host
    assert p.limits.cpus == (1,)  # the first CPU of the mask
    assert make(cpus_count=2).limits.cpus == (0, 1)
    assert p.limits.pids_max == 6  # the container's init is in the group too
    assert (p.limits.io_iops, p.limits.io_bps) == (10, 4096)


def test_v1_groups_are_one_per_controller_even_where_hierarchies_share_a_mount():
    """As systemd mounts cpu,cpuacct together: each group is made once (a second mkdir of the
    same directory would fail the run)."""
    from nspawn.backends.linux import cgroups

    shared = "/sys/fs/cgroup/cpu,cpuacct/own"
    layout = cgroups.Layout(1, None, "/", {"cpu": shared, "cpuacct": shared, "memory": "/sys/fs/cgroup/memory/own",
                                           "blkio": "/sys/fs/cgroup/blkio/own"})
    groups = cgroups.directories(layout, ["memory", "cpu", "io"], "c1")
    assert groups == {"memory": "/sys/fs/cgroup/memory/own/c1", "cpu": shared + "/c1", "blkio": "/sys/fs/cgroup/blkio/own/c1"}
    assert len(set(groups.values())) == len(groups)


def test_v2_groups_are_named_without_touching_the_host():
    """Enabling controllers is cgroups.enable's: directories() only names the group (here below
    a mount that does not exist)."""
    from nspawn.backends.linux import cgroups

    layout = cgroups.Layout(2, "/nonexistent/cgroup", "/launcher.scope")
    assert cgroups.directories(layout, ["memory", "pids"], "c1") == {"v2": "/nonexistent/cgroup/c1"}


def test_container_paths_may_not_be_or_cover_the_containers_own_mounts():
    from nspawn.backends.linux import validate

    def findings(**document):
        config, file_findings = build_config({"process_executable": "/bin/true", "backend": "linux", **document}, "test", "/")
        assert file_findings == []
        return [(f.path, f.message) for f in validate(config)]

    assert findings(process_directory="/srv", mapped_directory="/", mounts=[{"host_path": "/a", "container_path": "/proc/x"}]) == [
        (("mapped_directory",), "found '/', which would cover the container's /; expected another directory"),
        (("mounts", 0, "container_path"), "found '/proc/x', which would cover the container's /proc; expected another directory"),
    ]
    assert findings(mounts=[{"host_path": "/a", "container_path": "/dev"}, {"host_path": "/b", "container_path": "/sys/fs"}]) == [
        (("mounts", 0, "container_path"), "found '/dev', which would cover the container's /dev; expected another directory"),
        (("mounts", 1, "container_path"), "found '/sys/fs', which would cover the container's /sys; expected another directory"),
    ]
    assert findings(process_directory="/srv", mapped_directory="/work",
                    mounts=[{"host_path": "/a", "container_path": "/procs"}, {"host_path": "/b", "container_path": "/devices/x"}]) == []
    # the host view is of the host's /, which a parent layer replaces: asked for with one, it is refused, not dropped
    assert findings(parent_layer_directory="/srv/root", host_view="full") == [
        (("host_view",), "found 'full' with parent_layer_directory, whose root the container sees instead of the host's; "
                         "expected it absent")]
    assert findings(parent_layer_directory="/srv/root", host_view="os") == findings(host_view="full") == []
    # an image replaces the host's / too, and its layers are not id-mapped
    assert findings(image="alpine:3", host_view="full", private_users="pick") == [
        (("host_view",), "found 'full' with image, whose root the container sees instead of the host's; expected it absent"),
        (("private_users",), "found 'pick' with an image, whose layers are not id-mapped (a parent_layer_directory is); "
                             "expected no")]
    # only root keeps capabilities: CAP_MKNOD asked for another user is refused, not dropped
    assert findings(user="nobody", allow_mknod=True) == [
        (("allow_mknod",), "found true with user 'nobody', who keeps no capability (only root may keep CAP_MKNOD); "
                           "expected it absent")]
    assert findings(user="0:100", allow_mknod=True) == findings(user="nobody") == []


def test_a_user_other_than_root_keeps_no_capability_and_root_keeps_dockers_set_less_mknod():
    assert make(user="nobody").capability_mask == 0 and make(user="65534:65534").capabilities == ()
    for user in ("root", "0", "0:100", "root:wheel"):
        assert make(user=user).capability_mask == 0xA80425FB & ~(1 << 27)
        assert make(user=user, allow_mknod=True).capability_mask == 0xA80425FB
    assert make().user == "root" and make(user="nobody").user == "nobody"


def test_the_process_limit_counts_the_payloads_own_with_private_users_too():
    """The default bound (4096) and an asked one alike: init is in the groups, and with private
    users the container's first process as well."""
    assert make().limits.pids_max == 4096 + 1
    assert make(private_users="pick").limits.pids_max == 4096 + 2
    assert make(max_processes=5, private_users="pick").limits.pids_max == 7


def test_lang_is_set_unless_the_config_sets_it():
    assert dict(make(environment={"LANG": "de_DE.UTF-8"}).env)["LANG"] == "de_DE.UTF-8"


@pytest.mark.parametrize("mode,network,expected", [
    ("auto", "none", "keep"), ("auto", "host", "copy-host"), ("copy-host", "none", "copy-host"),
    ("keep", "host", "keep"), ("none", "host", "none")])
def test_resolv_conf_auto_copies_the_hosts_only_where_there_is_a_network(mode, network, expected):
    assert make(resolv_conf=mode, network=network).resolv_conf == expected


def test_the_linux_only_keys_are_refused_for_hcs():
    config, findings = build_config({"process_executable": "C:\\x.exe", "backend": "hcs",
                                     "parent_layer_directory": "C:\\l", "private_users": "pick",
                                     "resolv_conf": "none", "timezone": "keep"}, "test", "/")
    assert sorted(f.path for f in findings) == [("private_users",), ("resolv_conf",), ("timezone",)]
