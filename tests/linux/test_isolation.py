"""What the payload sees: its own root, processes, mounts, network, privileges."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from tests.linux.conftest import config, needs_root, run, sh

pytestmark = needs_root

DOCKER_CAPS = "00000000a00425fb"  # Docker's default set less CAP_MKNOD

FACTS = r"""
echo "hostname=$(hostname)"
echo "me=$$"
echo "pids=$(ls /proc | grep -c '^[0-9]')"
echo "init=$(cat /proc/1/comm)"
echo "nets=$(ls /sys/class/net | tr '\n' ' ')"
echo "loflags=$(cat /sys/class/net/lo/flags)"
grep -E '^(CapBnd|CapEff|CapPrm|CapInh|NoNewPrivs):' /proc/self/status | tr -d '\t' | sed 's/:/=/'
echo "pwd=$(pwd)"
echo "user=$(id -u)"
echo "term=${TERM-unset} container=$container path=$PATH home=$HOME greeting=$GREETING"
echo secret > /etc/nspawn-escape-test && echo "wrote-etc=yes"
echo data > /work/inside.txt
sed 's/^[0-9]* [0-9]* [0-9:]* [^ ]* //' /proc/self/mountinfo | awk '{print "mount=" $1 " " $(NF-2)}'
"""


def facts(out: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        parsed[key] = parsed[key] + "\n" + value if key in parsed else value
    return parsed


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return d


def test_the_payload_sees_only_its_container(work, clean):
    r = run(sh(FACTS, process_directory=str(work), mapped_directory="/work", hostname="box1",
               environment={"GREETING": "hi"}))
    assert r.code == 0, r.err
    f = facts(r.out)
    assert f["hostname"] == "box1"
    assert f["me"] == "2"  # PID 1 is the container's init
    assert f["init"] == "python3" or f["init"].startswith("python")
    assert int(f["pids"]) <= 6  # init, sh, and the pipeline's few processes: no host process
    assert f["nets"].split() == ["lo"]
    assert int(f["loflags"], 16) & 1  # IFF_UP
    for cap in ("CapBnd", "CapEff", "CapPrm", "CapInh"):
        assert f[cap] == DOCKER_CAPS
    assert f["NoNewPrivs"] == "1"
    assert f["pwd"] == "/work" and f["user"] == "0"
    assert "container=nspawn path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin home=/root greeting=hi" in f["term"]
    mounts = dict(line.split(" ", 1) for line in f["mount"].splitlines())
    assert mounts["/"] == "overlay" and mounts["/proc"] == "proc" and mounts["/sys"] == "sysfs"
    assert mounts["/dev"] == "tmpfs" and mounts["/dev/pts"] == "devpts" and mounts["/tmp"] == "tmpfs"
    assert mounts["/work"] == "ext4" or mounts["/work"] == os.popen(f"stat -f -c %T {work}").read().strip()
    assert not any("oldroot" in m for m in mounts)
    # The container's own cgroup view (tests/linux/test_cgroup_namespace.py), nothing of the host's
    assert all(mounts[m] in ("tmpfs", "cgroup", "cgroup2") for m in mounts if m.startswith("/sys/fs/cgroup"))
    assert f["wrote-etc"] == "yes" and not os.path.exists("/etc/nspawn-escape-test")
    assert (work / "inside.txt").read_text() == "data\n"


def test_dev_is_minimal_and_works(clean):
    r = run(sh("ls /dev | tr '\\n' ' '; head -c 4 /dev/zero | od -An -tx1; echo x > /dev/null && echo null-ok; "
               "test -c /dev/pts/ptmx && echo ptmx-ok; touch /dev/shm/x && echo shm-ok; ls -ld /tmp | cut -c1-10"))
    assert r.code == 0, r.err
    listed = set(r.out.splitlines()[0].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd"} <= listed
    assert "sda" not in listed and "vda" not in listed
    assert "00 00 00 00" in r.out and "null-ok" in r.out and "ptmx-ok" in r.out and "shm-ok" in r.out
    assert "drwxrwxrwt" in r.out


def test_read_only_mapped_directory_refuses_writes(work, clean):
    (work / "keep").write_text("kept")
    r = run(sh("echo no > /work/x && echo wrote; test -r /work/keep && echo readable", process_directory=str(work),
               mapped_directory="/work", mapped_directory_read_only=True))
    assert "wrote" not in r.out and "readable" in r.out and "Read-only file system" in r.err
    assert not (work / "x").exists()


def test_extra_mounts_files_and_read_only(tmp_path, work, clean):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("in")
    single = tmp_path / "single.conf"
    single.write_text("conf")
    r = run(sh("cat /mnt/data/in.txt /etc/app.conf; echo >> /mnt/data/in.txt || echo ro-refused; echo new > /etc/app.conf && echo file-rw",
               mounts=[{"host_path": str(data), "container_path": "/mnt/data", "read_only": True},
                       {"host_path": str(single), "container_path": "/etc/app.conf"}]))
    assert r.out.startswith("inconf") and "ro-refused" in r.out and "file-rw" in r.out
    assert single.read_text() == "new\n" and (data / "in.txt").read_text() == "in"
    assert not os.path.exists("/mnt/data/in.txt")  # the target was made in the overlay, not on the host


def test_host_network_shares_the_hosts_interfaces(clean):
    r = run(sh("ls /sys/class/net | sort | tr '\\n' ' '; hostname", network="host", hostname="netbox"))
    assert r.out.split()[:-1] == sorted(os.listdir("/sys/class/net"))
    assert r.out.split()[-1] == "netbox" and socket.gethostname() != "netbox"


def test_random_hostname_and_exit_codes(clean):
    r = run(sh("hostname; exit 3"))
    assert r.code == 3 and len(r.out.strip()) == 8 and int(r.out.strip(), 16) >= 0
    r = run(sh("kill -TERM $$"))
    assert r.code == 143 and r.result.signal == 15


def test_stdout_file_gets_both_streams_and_the_terminal_each(work, clean):
    r = run(sh("echo out; echo err >&2", process_directory=str(work), stdout_filename="log.txt"))
    assert r.code == 0 and r.out == "out\n" and r.err == "err\n"
    assert sorted((work / "log.txt").read_text().splitlines()) == ["err", "out"]


def test_parent_layer_is_the_root(tmp_path, clean):
    layer = tmp_path / "layer"
    for binary in ("/bin/sh", "/bin/cat"):
        real = os.path.realpath(binary)
        libs = [l.split("=>")[-1].split()[0] for l in subprocess.run(["ldd", real], capture_output=True, text=True).stdout.splitlines()
                if "/" in l]
        for path in [binary] + libs:
            target = layer / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(path), target)
    (layer / "etc").mkdir()
    (layer / "etc/motd").write_text("from the layer\n")
    r = run({"process_executable": "/bin/sh", "process_arguments": ["-c", "cat /etc/motd; echo changed > /etc/motd; test -e /usr/bin/python3 || echo no-python"],
             "parent_layer_directory": str(layer)})
    assert r.code == 0, r.err
    assert r.out == "from the layer\nno-python\n"
    assert (layer / "etc/motd").read_text() == "from the layer\n"  # writes went to the scratch upper layer


def test_executable_missing_or_not_executable_at_run_time(work, clean):
    tool = work / "tool"
    tool.write_text("#!/bin/sh\necho ran\n")
    tool.chmod(0o755)
    cfg = {"process_executable": "tool", "process_directory": str(work)}
    assert run(cfg).out == "ran\n"
    c = config(cfg)
    tool.chmod(0o644)
    from nspawn.launch import run as launch_run
    r = launch_run(c)
    assert r.exit_code == 126 and "cannot be executed" in r.error
    tool.unlink()
    r = launch_run(c)
    assert r.exit_code == 127 and "not found" in r.error


def test_symlinks_pointing_out_at_run_time_are_refused(tmp_path, work, clean):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    c = config({"process_executable": "/bin/true", "process_directory": str(work), "stdout_filename": "log.txt"})
    (work / "log.txt").symlink_to(outside)
    from nspawn.launch import run as launch_run
    r = launch_run(c)
    assert r.exit_code == 2 and "log.txt" in r.error and outside.read_text() == "keep"
    tool = work / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    c = config({"process_executable": "tool", "process_directory": str(work)})
    tool.unlink()
    tool.symlink_to("/bin/true")
    r = launch_run(c)
    assert r.exit_code == 127 and "outside the process directory" in r.error


def test_what_the_payload_leaves_in_its_root_goes_with_the_scratch(clean):
    marker = "/nspawn-scratch-probe"
    r = run(sh(f"mkdir -p {marker}/a/b && echo x > {marker}/a/f && ln -s / {marker}/root-link && rm -r /srv; echo done"))
    assert r.out.strip() == "done", r.err
    assert not os.path.exists(marker) and os.path.isdir("/srv")  # on the host: nothing made, nothing removed
    # clean() checks that the scratch dir, with the files, symlink and whiteout above, is gone


@pytest.mark.parametrize("scratch", ["on disk", "in memory"])
def test_the_root_overlay_is_volatile(scratch, clean):
    """Its upper layer is scratch: unmounted at the end, it must not sync the host's file
    system (mounts._mount_overlay)."""
    r = run(sh("grep ' / / ' /proc/self/mountinfo", **({"scratch_size_mb": 64} if scratch == "in memory" else {})))
    assert r.result.exit_code == 0, r.err
    fields = r.out.split()
    options = fields[-1].split(",")
    assert fields[fields.index("-") + 1] == "overlay" and {"volatile", "fsync=volatile"} & set(options), r.out
