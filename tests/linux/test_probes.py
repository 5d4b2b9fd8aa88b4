"""The adversarial review of issue 11, probe by probe, against the default container: each runs
the attack the review ran and prints "refused" when it fails, "ALLOWED: ..." when it works.
docs/security.md tabulates them against Docker's defaults and bubblewrap's.

A probe that cannot fail proves nothing, so each of those a setting loosens is run loosened too
(LOOSENED) and must then print ALLOWED. The races (a bind source and the output file swapped by
a concurrent container) and the FIFO at stdout_filename are in test_host_paths.py."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

import pytest

from tests.linux.conftest import ROOT, needs_root, run, sh

pytestmark = needs_root


def _py(code: str) -> str:
    return "/usr/bin/python3 -c '" + code.replace("'", "'\"'\"'") + "'"


KEYCTL_NR = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 271, "s390x": 280}[os.uname().machine]


def _session_keyring() -> int:
    """This process's session keyring id (KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(KEYCTL_NR, 0, -3, 0)


PROBES = {
    # Devices
    "mknod a block device and read it": "mknod /tmp/sda b 8 0 2>/dev/null && head -c1 /tmp/sda >/dev/null 2>&1 "
                                        "&& echo ALLOWED || echo refused",
    "attach a loop device": "losetup -f >/dev/null 2>&1 && echo ALLOWED || echo refused",
    "open /dev/kvm": _py("import os\ntry:\n os.open('/dev/kvm', os.O_RDWR); print('ALLOWED')\n"
                         "except OSError: print('refused')"),
    "open /dev/fuse": "( : < /dev/fuse ) 2>/dev/null && echo ALLOWED || echo refused",
    "write the kernel log (/dev/kmsg)": "[ -c /dev/kmsg ] && echo forged 2>/dev/null > /dev/kmsg && echo ALLOWED || echo refused",
    # /proc and /sys
    "write kernel.core_pattern": "echo '|/bin/true' 2>/dev/null > /proc/sys/kernel/core_pattern && echo ALLOWED || echo refused",
    "write vm.overcommit_memory": "echo 1 2>/dev/null > /proc/sys/vm/overcommit_memory && echo ALLOWED || echo refused",
    "write kernel.randomize_va_space": "echo 0 2>/dev/null > /proc/sys/kernel/randomize_va_space && echo ALLOWED || echo refused",
    "read /proc/keys": "[ -s /proc/keys ] || [ -n \"$(cat /proc/keys 2>/dev/null)\" ] && echo ALLOWED || echo refused",
    "read /proc/timer_list": "[ -n \"$(cat /proc/timer_list 2>/dev/null)\" ] && echo ALLOWED || echo refused",
    "read /sys/firmware": "[ -n \"$(ls -A /sys/firmware 2>/dev/null)\" ] && echo ALLOWED || echo refused",
    "remount /proc/sys read-write": "mount -o remount,rw /proc/sys 2>/dev/null && echo ALLOWED || echo refused",
    "unmount a masked path": "umount /proc/keys 2>/dev/null && echo ALLOWED || echo refused",
    "reach the launcher's session keyring": _py(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"got = libc.syscall({KEYCTL_NR}, 0, -3, 0)\n"
        "print('ALLOWED' if got == int(os.environ['LAUNCHER_KEYRING']) else 'refused')"),
    # Nested namespaces and cgroups
    "unshare -rCm, mount cgroupfs, raise a limit": "unshare -rCm sh -c 'mount -t cgroup -o pids none /mnt && "
                                                    "echo max > /mnt/pids.max' 2>/dev/null && echo ALLOWED || echo refused",
    "write its own cgroup limits": "echo max 2>/dev/null > /sys/fs/cgroup/pids/pids.max && echo ALLOWED || echo refused",
    "see the host's cgroup paths": "grep -qv ':/$' /proc/self/cgroup && echo ALLOWED || echo refused",
    # Terminal and session
    "open /dev/tty (TIOCSTI into the host's shell)": "( : < /dev/tty ) 2>/dev/null && echo ALLOWED || echo refused",
    # Host view
    "read /etc/shadow": "cat /etc/shadow >/dev/null 2>&1 && echo ALLOWED || echo refused",
    "read /etc/gshadow": "cat /etc/gshadow >/dev/null 2>&1 && echo ALLOWED || echo refused",
    "read an SSH host key": "cat /etc/ssh/ssh_host_*_key >/dev/null 2>&1 && echo ALLOWED || echo refused",
    "see /home": "[ -n \"$(ls -A /home 2>/dev/null)\" ] && echo ALLOWED || echo refused",
    "see /root": "[ -n \"$(ls -A /root 2>/dev/null)\" ] && echo ALLOWED || echo refused",
    "see /run": "[ -n \"$(ls -A /run 2>/dev/null)\" ] && echo ALLOWED || echo refused",
    "see other containers' scratch": "[ -n \"$(ls -A /var/tmp/nspawn 2>/dev/null)\" ] && echo ALLOWED || echo refused",
    "see host scratch paths in mountinfo": "grep -q 'upperdir=/' /proc/self/mountinfo && echo ALLOWED || echo refused",
    "run as non-root in / (mode 0700)": "setpriv --reuid=65534 --regid=65534 --clear-groups /bin/true 2>/dev/null "
                                        "&& echo refused || echo ALLOWED",
    # Unbounded defaults
    "/tmp sized at half the host's memory": "[ $(df -k /tmp | awk 'NR==2 {print $2}') -gt "
                                            "$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 4 )) ] && echo ALLOWED || echo refused",
    "/dev/shm sized at half the host's memory": "[ $(df -k /dev/shm | awk 'NR==2 {print $2}') -gt 65536 ] "
                                                "&& echo ALLOWED || echo refused",
    "no process limit": "[ \"$(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)\" = max ] "
                        "&& echo ALLOWED || echo refused",
}

# Probes whose weakness a named setting brings back: the probe must see it then.
LOOSENED = {
    "read /etc/shadow": {"host_view": "full"},
    "see /run": {"host_view": "full"},
    "unshare -rCm, mount cgroupfs, raise a limit": {"seccomp": "unconfined"},
    "/tmp sized at half the host's memory": {"tmp_size_mb": 0},
    "/dev/shm sized at half the host's memory": {"shm_size_mb": 0},
}


@pytest.mark.parametrize("probe", PROBES)
def test_the_default_container_refuses(probe, clean):
    r = run(sh(PROBES[probe], environment={"LAUNCHER_KEYRING": str(_session_keyring())}))
    assert r.code == 0, r.err
    assert r.out.strip() == "refused", r.out


@pytest.mark.parametrize("probe", LOOSENED)
def test_the_probe_sees_the_weakness_when_loosened(probe, clean):
    if probe == "see /run" and not os.listdir("/run"):
        pytest.fail("this host's /run is empty: the probe cannot show anything")
    r = run(sh(PROBES[probe], **LOOSENED[probe]))
    assert r.code == 0, r.err
    assert r.out.strip() == "ALLOWED", r.out


def test_kill_0_reaches_no_launcher_and_no_sibling():
    """The review's `kill -KILL 0` killed a batch with its other jobs: the launcher, and a
    process in its process group, survive it; the container's own code says the kill."""
    launcher = subprocess.Popen([sys.executable, "-m", "nspawn", "run", "--", "/bin/sh", "-c", "kill -KILL 0; sleep 5"],
                                cwd=ROOT, process_group=0, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sibling = subprocess.Popen(["sleep", "30"], process_group=launcher.pid)
    try:
        _, err = launcher.communicate(timeout=30)
        assert launcher.returncode == 128 + signal.SIGKILL, err
        assert sibling.poll() is None
    finally:
        sibling.kill()
        sibling.wait()
