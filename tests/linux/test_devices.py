"""Devices: only /dev's standard set opens, enforced by the device cgroup (v1) or a device BPF
program (v2); CAP_MKNOD only when asked; nodev and nosuid on every mount but /dev."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys

import pytest

from nspawn.backends.linux import cgroups, devices, mounts
from tests.linux.conftest import ROOT, needs_root, run, sh

pytestmark = needs_root

# A node the payload makes (with allow_mknod) or finds, tried three ways: where it was made
# (/dev: a tmpfs without nodev, so only the device cgroup stands in the way), in /tmp (nodev).
TRY = r"""
try() { if ( : < "$1" ) 2>/dev/null; then echo "$1 opened"; else echo "$1 refused"; fi; }
mk() { mknod "$@" 2>/dev/null && echo "mknod $1 made" || echo "mknod $1 refused"; }
mk /dev/kmsg2 c 1 11; mk /dev/loopx b 7 0; mk /dev/kvm2 c 10 232; mk /tmp/null2 c 1 3
for n in /dev/kmsg2 /dev/loopx /dev/kvm2 /tmp/null2 /dev/null /dev/zero /dev/full /dev/urandom /dev/random /dev/tty; do
  [ -e "$n" ] && try "$n"
done
[ -c /dev/kmsg2 ] && echo probe 2>/dev/null > /dev/kmsg2 && echo "kmsg written"
true
"""


def outcome(out: str) -> set[str]:
    return set(out.splitlines())


@pytest.mark.parametrize("allow", [False, True])
def test_only_the_standard_devices_open(allow, clean):
    r = run(sh(TRY, allow_mknod=allow))
    assert r.code == 0, r.err
    seen = outcome(r.out)
    for name in ("null", "zero", "full", "urandom", "random"):
        assert f"/dev/{name} opened" in seen
    # no controlling terminal (a session of its own): /dev/tty is there but refuses with ENXIO
    assert "/dev/tty refused" in seen
    assert "kmsg written" not in seen
    if not allow:
        assert {"mknod /dev/kmsg2 refused", "mknod /dev/loopx refused", "mknod /dev/kvm2 refused",
                "mknod /tmp/null2 refused"} <= seen
        assert not any(line.endswith(" made") for line in seen)
        assert not any("allow_mknod" in w for w in r.warnings())
    else:
        # made where a node may be made, and useless: the cgroup refuses them in /dev, and
        # /tmp is nodev, so even null's number opens nothing there
        assert {"mknod /dev/kmsg2 made", "mknod /dev/loopx made", "mknod /dev/kvm2 made"} <= seen
        assert {"/dev/kmsg2 refused", "/dev/loopx refused", "/dev/kvm2 refused"} <= seen
        assert "/tmp/null2 refused" in seen or "mknod /tmp/null2 refused" in seen
        assert any("allow_mknod" in w for w in r.warnings())


def test_every_mount_but_dev_is_nodev_and_nosuid(tmp_path, clean):
    work = tmp_path / "work"
    work.mkdir()
    r = run(sh("cat /proc/self/mountinfo", process_directory=str(work), mapped_directory="/work",
               mounts=[{"host_path": str(tmp_path), "container_path": "/extra", "read_only": True}],
               tmpfs=[{"container_path": "/scratch", "size_mb": 1}]))
    assert r.code == 0, r.err
    points = {}
    for line in r.out.splitlines():
        fields = line.split()
        points[fields[4]] = set(fields[5].split(","))
    assert {"/", "/work", "/extra", "/scratch", "/tmp", "/proc", "/sys", "/dev/shm", "/dev"} <= set(points)
    for point, options in points.items():
        if point in ("/dev", "/dev/pts") or point in mounts.MASKED:
            continue  # /dev, and its /dev/null bound over the masked files of /proc
        assert {"nodev", "nosuid"} <= options, (point, options)
    assert "ro" in points["/extra"] and "rw" in points["/work"]


def test_a_setuid_file_in_a_mapping_gives_nothing(tmp_path, clean):
    """The payload's own setuid-root copy of a shell, run by an unprivileged user inside: the
    mapping is nosuid (and no_new_privs holds besides), so it stays that user."""
    work = tmp_path / "work"
    work.mkdir()
    script = ("cp /bin/sh /work/rootsh && chmod 4755 /work/rootsh && "
              "setpriv --reuid=65534 --regid=65534 --clear-groups /work/rootsh -c 'id -u'")
    r = run(sh(script, process_directory=str(work), mapped_directory="/work"))
    assert r.code == 0, r.err
    assert r.out.strip() == "65534"
    assert os.stat(work / "rootsh").st_mode & 0o4000  # the file is there: docs/security.md says what remains


# The device program, read as the kernel would: a small interpreter for the instructions it uses.

def _interpret(code: bytes, kind: int, access: int, major: int, minor: int) -> int:
    ctx = struct.pack("=III", access << 16 | kind, major, minor)
    regs = [0] * 11
    pc = 0
    little = struct.pack("=H", 1)[0] == 1
    while True:
        op, packed, off, imm = struct.unpack_from("=BBhi", code, pc * 8)
        dst, src = (packed & 0xF, packed >> 4) if little else (packed >> 4, packed & 0xF)
        pc += 1
        if op == 0x61:
            assert src == 1, "loads come from the context only"
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif op == 0x57:
            regs[dst] &= imm & 0xFFFFFFFFFFFFFFFF
        elif op == 0x77:
            regs[dst] >>= imm
        elif op == 0xBF:
            regs[dst] = regs[src]
        elif op == 0xB7:
            regs[dst] = imm
        elif op == 0x55:
            if regs[dst] != imm:
                pc += off
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


CHAR, BLOCK = 2, 1
READ, WRITE, MKNOD = 2, 4, 1


@pytest.mark.parametrize("kind,access,major,minor,allowed,with_mknod", [
    (CHAR, READ | WRITE, 1, 3, 1, 0),  # /dev/null
    (CHAR, READ, 1, 9, 1, 0),  # urandom
    (CHAR, READ | WRITE, 136, 7, 1, 0),  # a pty of the container's devpts
    (CHAR, READ | WRITE, 5, 2, 1, 0),  # ptmx
    (CHAR, WRITE, 1, 11, 0, 0),  # /dev/kmsg
    (CHAR, READ | WRITE, 10, 232, 0, 0),  # /dev/kvm
    (CHAR, READ | WRITE, 10, 229, 0, 0),  # /dev/fuse
    (BLOCK, READ | WRITE, 7, 0, 0, 0),  # a loop device
    (BLOCK, READ, 1, 3, 0, 0),  # a block device with null's numbers
    (CHAR, MKNOD, 1, 11, 0, 0),
    (CHAR, MKNOD, 1, 11, 1, 1),  # allow_mknod: made ...
    (CHAR, READ, 1, 11, 0, 1),  # ... and still not opened
    (BLOCK, MKNOD, 8, 0, 1, 1),
])
def test_the_device_program_decides_as_the_rules(kind, access, major, minor, allowed, with_mknod):
    code = devices.program(devices.rules(bool(with_mknod)))
    assert len(code) % 8 == 0
    assert _interpret(code, kind, access, major, minor) == allowed


def test_v1_files_deny_all_then_allow_the_set():
    files = devices.v1_files(devices.rules(False))
    assert files[0] == ("devices.deny", "a")
    assert ("devices.allow", "c 136:* rwm") in files and ("devices.allow", "c 1:3 rwm") in files
    assert len(files) == 1 + len(devices.STANDARD)
    assert ("devices.allow", "b *:* m") in devices.v1_files(devices.rules(True))


def _cgroup2_mount() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    raise AssertionError("no cgroup2 hierarchy is mounted")


def test_the_device_program_holds_in_the_kernel(tmp_path):
    """The v2 path for real: the program loaded and attached to a v2 group (this host's unified
    hierarchy, on v1 hosts the empty one), and a process in it opening devices."""
    group = os.path.join(_cgroup2_mount(), f"nspawn-test-devices-{os.getpid()}")
    os.mkdir(group)
    try:
        devices.confine(2, group, devices.rules(False))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                with open(os.path.join(group, "cgroup.procs"), "w") as f:
                    f.write("0")
                seen = []
                for path in ("/dev/null", "/dev/zero", "/dev/kmsg", "/dev/full"):
                    try:
                        os.close(os.open(path, os.O_RDONLY))
                        seen.append(path + " opened")
                    except OSError as e:
                        seen.append(f"{path} {e.errno}")
                node = str(tmp_path / "kmsg")
                try:
                    os.mknod(node, 0o20600, os.makedev(1, 11))
                    seen.append("mknod made")
                except OSError as e:
                    seen.append(f"mknod {e.errno}")
                os.write(w, "\n".join(seen).encode())
            finally:
                os._exit(0)
        os.close(w)
        seen = os.read(r, 4096).decode().splitlines()
        os.close(r)
        os.waitpid(pid, 0)
    finally:
        os.rmdir(group)
    assert seen == ["/dev/null opened", "/dev/zero opened", f"/dev/kmsg {errno.EPERM}", "/dev/full opened",
                    f"mknod {errno.EPERM}"]


def test_a_launcher_whose_group_denies_a_standard_device_runs_without_it(tmp_path):
    """A v1 group may allow no more than its parent: a launcher in a group that denies
    /dev/urandom (as one inside another container may be) still runs its containers, which
    cannot open it either."""
    if devices.group_key(cgroups.detect()) != devices.V1_HIERARCHY:
        pytest.skip("a cgroup v1 devices hierarchy is what this is about; v2 has no such inheritance")
    parent = os.path.join(cgroups.detect().v1["devices"], f"nspawn-test-parent-{os.getpid()}")
    os.mkdir(parent)
    try:
        cgroups.write(os.path.join(parent, "devices.deny"), "c 1:9 rwm")
        env = dict(os.environ, NSPAWN_STATE_DIR=str(tmp_path / "state"), NSPAWN_SCRATCH_DIR=str(tmp_path / "scratch"))
        joined = f"echo $$ > {parent}/tasks && exec \"$@\""
        r = subprocess.run(["/bin/sh", "-c", joined, "sh", sys.executable, "-m", "nspawn", "run", "--", "/bin/sh", "-c",
                            "( : < /dev/urandom ) 2>/dev/null && echo urandom || echo no-urandom; head -c1 /dev/zero | wc -c"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (0, "no-urandom\n1\n"), r.stderr
    finally:
        os.rmdir(parent)


def _v2_layout() -> cgroups.Layout:
    """This host's cgroup v2 hierarchy as the layout, whatever holds the controllers: on a v1
    host (CI's) its empty unified hierarchy, which holds no controller but takes device
    programs, so the v2 path of a run is exercised end to end."""
    with open("/proc/self/cgroup") as f:
        own = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), "/")
    return cgroups.Layout(2, _cgroup2_mount(), own)


def test_a_run_on_cgroup_v2_confines_devices_with_its_program(monkeypatch, clean):
    monkeypatch.setattr(cgroups, "detect", _v2_layout)
    r = run(sh(TRY, allow_mknod=True))
    assert r.code == 0, r.err
    seen = outcome(r.out)
    assert {"mknod /dev/kmsg2 made", "/dev/kmsg2 refused", "/dev/loopx refused", "/dev/null opened"} <= seen, seen
    groups = [x for x in r.result.rolled_back if x.startswith("cgroup")]
    assert len(groups) == 1 and groups[0].startswith("cgroup " + _cgroup2_mount()), r.result.rolled_back


def test_with_private_users_the_hosts_standard_nodes_open_in_a_confined_group(clean):
    """In a user namespace no node can be made: /dev's standard nodes are the host's, bound, and
    the device cgroup still confines the payload: it is in the run's own group (the namespace's
    root), whose v1 allow list is the standard set, or which on v2 holds the device program."""
    layout = cgroups.detect()
    r = run(sh(TRY + "cat /proc/self/cgroup; cat /sys/fs/cgroup/devices/devices.list 2>/dev/null; true",
               private_users="pick"))
    assert r.code == 0, r.err
    seen = outcome(r.out)
    for name in ("null", "zero", "full", "urandom", "random"):
        assert f"/dev/{name} opened" in seen
    assert not any(line.endswith(" made") for line in seen) and "kmsg written" not in seen
    if layout.version == 1:
        assert any(line.endswith(":devices:/") for line in seen), r.out
        assert {value for file, value in devices.v1_files(devices.STANDARD) if file == "devices.allow"} <= seen
    else:
        assert "0::/" in seen, r.out
