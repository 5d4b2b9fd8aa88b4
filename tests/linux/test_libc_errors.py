"""Every libc wrapper's failure: a NativeError (an OSError) naming the call, the path where
there is one, and the errno with its text. Calls that would change this host if they worked
run in a forked child that has given up the capability they need first."""

from __future__ import annotations

import errno
import os
import signal
import socket

import pytest

from nspawn.backends.linux import diagnosis, libc
from tests.linux.conftest import needs_root

pytestmark = needs_root

CAP_SYS_ADMIN = 21


def in_child(action) -> str:
    """Run `action` in a forked child; what it returned, or what it raised, as
    "errno|call|filename|text"."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, str(action()).encode())
        except libc.NativeError as e:
            os.write(w, f"{errno.errorcode[e.errno]}|{e.call}|{e.filename}|{e}".encode())
        except BaseException as e:
            os.write(w, repr(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    said = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return said


def without_sys_admin(action):
    def act() -> None:
        with open("/proc/self/status") as f:
            permitted = next(int(line.split()[1], 16) for line in f if line.startswith("CapPrm:"))
        rest = permitted & ~(1 << CAP_SYS_ADMIN)
        libc.capset(rest, rest, 0)
        action()
    return act


CASES = {
    "mount": (lambda: libc.mount("/nonexistent-source", "/mnt", None, libc.MS_BIND),
              "ENOENT|mount|/nonexistent-source|mount /nonexistent-source /mnt: No such file or directory (ENOENT)"),
    "umount2": (lambda: libc.umount2("/nonexistent-target", libc.MNT_DETACH),
                "ENOENT|umount2|/nonexistent-target|umount2 /nonexistent-target: No such file or directory (ENOENT)"),
    "unshare": (without_sys_admin(lambda: libc.unshare(libc.CLONE_NEWNS)),
                "EPERM|unshare|None|unshare: Operation not permitted (EPERM)"),
    "sethostname": (without_sys_admin(lambda: libc.sethostname("x")),
                    "EPERM|sethostname|None|sethostname: Operation not permitted (EPERM)"),
    "prctl": (lambda: libc.prctl(12345), "EINVAL|prctl|None|prctl: Invalid argument (EINVAL)"),
    "setns": (lambda: libc.setns(0, libc.CLONE_NEWNET), "EINVAL|setns|None|setns: Invalid argument (EINVAL)"),
    "pivot_root": (lambda: libc.pivot_root("/nonexistent-root", "/nonexistent-root/old"),
                   "ENOENT|pivot_root|/nonexistent-root|pivot_root /nonexistent-root: No such file or directory (ENOENT)"),
    "capset": (without_sys_admin(lambda: libc.capset(1 << CAP_SYS_ADMIN, 1 << CAP_SYS_ADMIN, 0)),
               "EPERM|capset|None|capset: Operation not permitted (EPERM)"),
    "clone3": (lambda: libc.fork_into_cgroup(os.open("/dev/null", os.O_RDONLY)),
               "EBADF|clone3|None|clone3: Bad file descriptor (EBADF)"),
    "ioctl": (lambda: libc._ioctl(-1, libc.SIOCGIFFLAGS, None), "EBADF|ioctl|None|ioctl: Bad file descriptor (EBADF)"),
    "ioctl on a missing interface": (lambda: libc.interface_up("nspawn-none0"),
                                     "ENODEV|ioctl|None|ioctl: No such device (ENODEV)"),
    "keyctl": (lambda: libc._keyctl(libc._syscall_number("keyctl"), 12345, None),
               "ENOTSUP|keyctl|None|keyctl: Operation not supported (ENOTSUP)"),
    "openat2": (lambda: libc.openat2(libc.AT_FDCWD, "/nonexistent-x", os.O_RDONLY, libc.RESOLVE_NO_SYMLINKS),
                "ENOENT|openat2|/nonexistent-x|openat2 /nonexistent-x: No such file or directory (ENOENT)"),
    "open_tree": (lambda: libc.clone_tree(-1), "EBADF|open_tree|None|open_tree: Bad file descriptor (EBADF)"),
    "move_mount": (lambda: libc.attach_tree(-1, "/mnt"), "EBADF|move_mount|/mnt|move_mount /mnt: Bad file descriptor (EBADF)"),
    "bpf": (lambda: libc.attach_device_program(-1, -1), "EBADF|bpf|None|bpf: Bad file descriptor (EBADF)"),
    "socket": (lambda: libc._socket(12345, libc.SOCK_DGRAM, 0),
               "EAFNOSUPPORT|socket|None|socket: Address family not supported by protocol (EAFNOSUPPORT)"),
    "mount_setattr": (lambda: libc.idmap_tree(-1, -1), "EINVAL|mount_setattr|None|mount_setattr: Invalid argument (EINVAL)"),
    "setns": (lambda: libc.setns(-1, libc.CLONE_NEWUSER), "EBADF|setns|None|setns: Bad file descriptor (EBADF)"),
    "tee": (lambda: libc.tee(-1, -1, 1), "EBADF|tee|None|tee: Bad file descriptor (EBADF)"),
    "send": (lambda: libc.send_nowait(-1, b"x"), "EBADF|send|None|send: Bad file descriptor (EBADF)"),
    "send into a socket with no room": (lambda: _fill(*socket.socketpair()),
                                        "EAGAIN|send|None|send: Resource temporarily unavailable (EAGAIN)"),
}


def _fill(sock, peer) -> None:
    """Sends into a blocking socket whose `peer` reads nothing until send_nowait refuses; a
    send that blocked instead would end the child by its alarm, saying nothing."""
    signal.alarm(10)
    while True:
        libc.send_nowait(sock.fileno(), bytes(1 << 16))


@pytest.mark.parametrize("name", CASES)
def test_a_failing_call_names_itself_its_path_and_its_errno(name):
    action, said = CASES[name]
    assert in_child(action) == said


def test_a_refused_device_program_says_what_the_verifier_said():
    said = in_child(lambda: libc.load_device_program(b"\x95" + bytes(7), b"bad"))  # exit, r0 never set
    assert said.startswith("EACCES|bpf|None|bpf: Permission denied: the verifier says "), said
    assert "R0" in said


def test_every_binding_is_covered():
    bound = {name[1:] for name, value in vars(libc).items() if isinstance(value, libc._libc._FuncPtr)}
    assert bound <= {case.split()[0] for case in CASES}, bound


def test_doctor_as_a_user_says_why_each_namespace_is_refused():
    def doctor_as_nobody() -> list:
        os.setgid(65534)
        os.setuid(65534)
        checks = {name: (ok, detail) for name, ok, detail in diagnosis.doctor()}
        return [checks[f"{ns} namespace"] for ns in libc.NAMESPACE_FLAGS]

    assert in_child(doctor_as_nobody) == repr([(False, "unshare: Operation not permitted (EPERM)")] * len(libc.NAMESPACE_FLAGS))
