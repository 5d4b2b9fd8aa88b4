"""The libc and raw system calls the Linux backend needs, typed, each raising NativeError (an
OSError naming the call, its path and the errno) on failure.

Python's os module lacks these (mount, unshare, pivot_root, capset, …) before 3.12, and a
helper binary would cost a process start; ctypes into the already-loaded libc costs nothing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import _signal as signal  # its C module: the signal package imports enum, 2 ms of every run
import sys
from ctypes import c_char_p, c_int, c_long, c_size_t, c_uint, c_ulong, c_void_p

_libc = ctypes.CDLL(None, use_errno=True)
# The same libc through calls that keep the GIL held, as os.fork holds it around fork().
_libc_holding_gil = ctypes.PyDLL(None, use_errno=True)

# Namespaces (sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUSER = 0x10000000
NAMESPACE_FLAGS = {"mount": CLONE_NEWNS, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC,
                   "net": CLONE_NEWNET, "pid": CLONE_NEWPID, "cgroup": CLONE_NEWCGROUP}

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
CLONE_INTO_CGROUP = 0x200000000  # sched.h, Linux 5.7
CLONE_PARENT = 0x00008000

# prctl(2)
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2  # linux/seccomp.h

MSG_DONTWAIT = 0x40  # sys/socket.h

# Network interface flags, for bringing up lo in a fresh network namespace.
AF_INET = 2
SOCK_DGRAM = 2
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

# Calls newer than Linux 5.0 share one number on every architecture but alpha.
_COMMON = {"clone3": 435, "openat2": 437, "open_tree": 428, "move_mount": 429, "mount_setattr": 442}
_SYSCALLS = {  # none of these has a glibc wrapper in Debian 12's glibc
    "x86_64": {"pivot_root": 155, "capset": 126, "keyctl": 250, "bpf": 321, **_COMMON},
    "aarch64": {"pivot_root": 41, "capset": 91, "keyctl": 219, "bpf": 280, **_COMMON},
    "riscv64": {"pivot_root": 41, "capset": 91, "keyctl": 219, "bpf": 280, **_COMMON},
    "ppc64le": {"pivot_root": 203, "capset": 184, "keyctl": 271, "bpf": 361, **_COMMON},
    "s390x": {"pivot_root": 217, "capset": 185, "keyctl": 280, "bpf": 351, **_COMMON},
}
KEYCTL_JOIN_SESSION_KEYRING = 1  # linux/keyctl.h

# openat2(2) (linux/openat2.h) and the mount API (linux/mount.h, fcntl.h)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
O_PATH = 0o10000000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000

# bpf(2) (linux/bpf.h): a cgroup v2 device program
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class NativeError(OSError):
    """A libc call failed: `call` is its name, `filename` the path it was given where there is
    one (`filename2` a second: a mount's target), errno and strerror the kernel's answer. An
    OSError, so callers test `errno` as for os calls."""

    def __init__(self, call: str, err: int, path: str | None = None, path2: str | None = None, text: str | None = None):
        super().__init__(err, text or os.strerror(err), path, None, path2)
        self.call = call

    def __str__(self) -> str:
        where = "".join(f" {p}" for p in (self.filename, self.filename2) if p)
        name = errno.errorcode.get(self.errno, str(self.errno))
        return f"{self.call}{where}: {self.strerror} ({name})"


def _function(name: str, restype, *argtypes, paths: tuple[int, ...] = (), syscall: bool = False, library=_libc):
    """A fresh function object per binding (syscall() is bound thrice with different argtypes)
    whose failure (-1) raises NativeError naming `name` and the arguments at `paths`, in argument
    order (a mount's source may be a filesystem's name). With `syscall`, it is called through
    syscall(), whose first argument, the call's number, is not the call's own."""
    func = library._FuncPtr(("syscall" if syscall else name, library))
    first = 1 if syscall else 0

    def errcheck(result, _func, args):
        if result != -1:
            return result
        shown = [None if args[first + i] is None else os.fsdecode(args[first + i]) for i in paths]
        raise NativeError(name, ctypes.get_errno(), *shown)

    func.restype, func.argtypes, func.errcheck = restype, argtypes, errcheck
    return func


_mount = _function("mount", c_int, c_char_p, c_char_p, c_char_p, c_ulong, c_char_p, paths=(0, 1))
_umount2 = _function("umount2", c_int, c_char_p, c_int, paths=(0,))
_unshare = _function("unshare", c_int, c_int)
_setns = _function("setns", c_int, c_int, c_int)
_sethostname = _function("sethostname", c_int, c_char_p, c_size_t)
_prctl = _function("prctl", c_int, c_int, c_ulong, c_ulong, c_ulong, c_ulong)
_socket = _function("socket", c_int, c_int, c_int, c_int)
_ioctl = _function("ioctl", c_int, c_int, c_ulong, c_void_p)
_pivot_root = _function("pivot_root", c_long, c_long, c_char_p, c_char_p, paths=(0,), syscall=True)
_capset = _function("capset", c_long, c_long, c_void_p, c_void_p, syscall=True)
_keyctl = _function("keyctl", c_long, c_long, c_int, c_char_p, syscall=True)
_openat2 = _function("openat2", c_long, c_long, c_int, c_char_p, c_void_p, c_size_t, paths=(1,), syscall=True)
_open_tree = _function("open_tree", c_long, c_long, c_int, c_char_p, c_uint, syscall=True)
_move_mount = _function("move_mount", c_long, c_long, c_int, c_char_p, c_int, c_char_p, c_uint, paths=(3,), syscall=True)
_mount_setattr = _function("mount_setattr", c_long, c_long, c_int, c_char_p, c_uint, c_void_p, c_size_t, syscall=True)
_bpf = _function("bpf", c_long, c_long, c_int, c_void_p, c_uint, syscall=True)
_tee = _function("tee", ctypes.c_ssize_t, c_int, c_int, c_size_t, c_uint)
_send = _function("send", ctypes.c_ssize_t, c_int, c_char_p, c_size_t, c_int)
_clone3 = _function("clone3", c_long, c_long, c_void_p, c_size_t, syscall=True, library=_libc_holding_gil)


class _MountAttr(ctypes.Structure):  # struct mount_attr (linux/mount.h)
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


class _CloneArgs(ctypes.Structure):  # struct clone_args up to its cgroup field (linux/sched.h)
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


def _interpreter_hook(name: str):
    hook = getattr(ctypes.pythonapi, name)
    hook.restype, hook.argtypes = None, []
    return hook


_before_fork = _interpreter_hook("PyOS_BeforeFork")
_after_fork_parent = _interpreter_hook("PyOS_AfterFork_Parent")
_after_fork_child = _interpreter_hook("PyOS_AfterFork_Child")


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _syscall_number(name: str) -> int:
    try:
        return _SYSCALLS[os.uname().machine][name]
    except KeyError:
        raise NativeError(name, errno.ENOSYS, text=f"no system call number known on {os.uname().machine}") from None


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _mount(_b(source), _b(target), _b(fstype), flags, _b(data))


def umount2(target: str, flags: int) -> None:
    _umount2(_b(target), flags)


def unshare(flags: int) -> None:
    _unshare(flags)


def setns(fd: int, nstype: int) -> None:
    """This thread into the namespace `fd` names (os.setns is 3.12's)."""
    _setns(fd, nstype)


def sethostname(name: str) -> None:
    raw = name.encode()
    _sethostname(raw, len(raw))


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    _prctl(option, arg2, arg3, 0, 0)


def pivot_root(new_root: str, put_old: str) -> None:
    _pivot_root(_syscall_number("pivot_root"), _b(new_root), _b(put_old))


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (64-bit masks) with the v3 two-word layout."""
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    for word in range(2):
        shift = 32 * word
        data[3 * word:3 * word + 3] = [(m >> shift) & 0xFFFFFFFF for m in (effective, permitted, inheritable)]
    _capset(_syscall_number("capset"), header, data)


def idmap_tree(tree_fd: int, userns_fd: int) -> None:
    """Id-map the detached mount `tree_fd` (from clone_tree) as the user namespace `userns_fd`
    maps its ids (mount_setattr, Linux 5.12)."""
    attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
    _mount_setattr(_syscall_number("mount_setattr"), tree_fd, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr))


def restrict_tree(path: str, attributes: int) -> None:
    """Set MOUNT_ATTR_* `attributes` (read-only, nosuid, ...) on the mount at `path` and every
    mount below it; unlike a remount, it reaches the mounts below too."""
    attr = _MountAttr(attr_set=attributes)
    _mount_setattr(_syscall_number("mount_setattr"), AT_FDCWD, _b(path), AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))


def new_session_keyring() -> None:
    """Join a fresh anonymous session keyring, leaving the one inherited from the launcher's
    login (and the keys in it) out of reach."""
    _keyctl(_syscall_number("keyctl"), KEYCTL_JOIN_SESSION_KEYRING, None)


class _OpenHow(ctypes.Structure):  # struct open_how (linux/openat2.h)
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """open(2) with `resolve` rules (RESOLVE_*), which the kernel applies to every component
    of `path` at once: no window between a check and the open (Linux 5.6)."""
    how = _OpenHow(flags=flags | os.O_CLOEXEC, mode=mode, resolve=resolve)
    return _openat2(_syscall_number("openat2"), dirfd, _b(path), ctypes.byref(how), ctypes.sizeof(how))


def clone_tree(fd: int) -> int:
    """A detached copy of the mount at `fd` (an O_PATH descriptor), not recursive, as a bind
    mount's source (open_tree with OPEN_TREE_CLONE, Linux 5.2): attached later with
    attach_tree, in whichever mount namespace, it is what `fd` was opened on, whatever the
    path names then."""
    return _open_tree(_syscall_number("open_tree"), fd, b"", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH)


def attach_tree(tree_fd: int, target: str) -> None:
    """Mount the detached tree `tree_fd` (from clone_tree) at `target`."""
    _move_mount(_syscall_number("move_mount"), tree_fd, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH)


class _ProgLoad(ctypes.Structure):  # union bpf_attr as BPF_PROG_LOAD reads it, up to expected_attach_type
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32)]


class _ProgAttach(ctypes.Structure):  # union bpf_attr as BPF_PROG_ATTACH reads it
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32)]


def load_device_program(instructions: bytes, name: bytes) -> int:
    """Load a BPF_PROG_TYPE_CGROUP_DEVICE program (8-byte instructions); returns its fd. When
    the verifier refuses it, it is loaded again with the verifier's log, so the error says why
    (asked at once, a log longer than its buffer fails the load)."""
    code = ctypes.create_string_buffer(instructions, len(instructions))
    licence = ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoad(prog_type=BPF_PROG_TYPE_CGROUP_DEVICE, insn_cnt=len(instructions) // 8,
                     insns=ctypes.addressof(code), license=ctypes.addressof(licence), prog_name=name[:15])
    try:
        return _bpf(_syscall_number("bpf"), BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    except NativeError as e:
        if e.errno not in (errno.EACCES, errno.EINVAL):
            raise
        log = ctypes.create_string_buffer(1 << 16)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        try:
            fd = _bpf(_syscall_number("bpf"), BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
        except NativeError:
            # the log traces each instruction ("12: (b7) r0 = 1"), says why, then counts
            said = [line for line in log.value.decode(errors="replace").splitlines()
                    if line and not line[0].isdigit() and not line.startswith("processed ")]
            raise NativeError("bpf", e.errno, text=f"{e.strerror}: the verifier says {said[-1] if said else 'nothing'}") from None
        os.close(fd)  # refused once, loaded the second time: nothing to trust
        raise


def attach_device_program(program_fd: int, cgroup_fd: int) -> None:
    """Attach a device program to the v2 group `cgroup_fd` is open on. It stays attached until
    the group is removed; programs of groups above still apply too (BPF_F_ALLOW_MULTI)."""
    attr = _ProgAttach(target_fd=cgroup_fd, attach_bpf_fd=program_fd, attach_type=BPF_CGROUP_DEVICE,
                       attach_flags=BPF_F_ALLOW_MULTI)
    _bpf(_syscall_number("bpf"), BPF_PROG_ATTACH, ctypes.byref(attr), ctypes.sizeof(attr))


def fork_into_cgroup(group_fd: int) -> int:
    """os.fork(), but the child starts in the cgroup v2 group `group_fd` is open on (clone3 with
    CLONE_INTO_CGROUP): no move afterwards, so no wait for the kernel's thread-group lock, which
    a move into a group takes."""
    return _clone(_CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=group_fd))


def fork_for_parent() -> int:
    """os.fork(), but the child is this process's parent's (clone3 with CLONE_PARENT): that
    parent waits for it as for its own child, and a PR_SET_PDEATHSIG the child sets fires when
    that parent's thread ends. The child's exit signal is this process's own."""
    return _clone(_CloneArgs(flags=CLONE_PARENT))


def _clone(args: _CloneArgs) -> int:
    """clone3 with the interpreter's side of a fork done as os.fork does it. Only for a
    single-threaded process: the raw system call skips libc's fork handling, which matters
    only for locks other threads might hold and for libc's cached thread id."""
    _before_fork()
    try:
        pid = _clone3(_syscall_number("clone3"), ctypes.byref(args), ctypes.sizeof(args))
    except BaseException:
        _after_fork_parent()
        raise
    (_after_fork_child if pid == 0 else _after_fork_parent)()
    return pid


def tee(fd_in: int, fd_out: int, length: int) -> int:
    """Duplicate up to `length` bytes waiting in pipe `fd_in` into pipe `fd_out`, leaving them
    in `fd_in` (tee(2); os has splice since 3.10, but not tee). Blocks for data in `fd_in` and
    for room in `fd_out`; 0 at `fd_in`'s end. Interrupted by a signal, it is called again
    once the signal's handler has run, as os calls are (PEP 475)."""
    while True:
        try:
            return _tee(fd_in, fd_out, length, 0)
        except NativeError as e:
            if e.errno != errno.EINTR:  # its handler runs as this loop goes on
                raise


def send_nowait(fd: int, data) -> int:
    """Into the socket `fd` as much of `data` as it has room for, without blocking whatever
    the flags of its descriptor (shared with other processes, they are not changed: send(2)
    with MSG_DONTWAIT); NativeError EAGAIN when it has none."""
    return _send(fd, bytes(data), len(data), MSG_DONTWAIT)


def ioctl(fd: int, request: int, arg: bytes | None = None) -> None:
    _ioctl(fd, request, arg)


def interface_up(name: str) -> None:
    """Set IFF_UP on a network interface, as `ip link set NAME up` would."""
    fd = _socket(AF_INET, SOCK_DGRAM, 0)
    try:
        ifreq = ctypes.create_string_buffer(40)  # struct ifreq: 16-byte name, then a short of flags
        ifreq[:len(name)] = name.encode()
        _ioctl(fd, SIOCGIFFLAGS, ifreq)
        flags = int.from_bytes(ifreq[16:18], sys.byteorder) | IFF_UP
        ifreq[16:18] = flags.to_bytes(2, sys.byteorder)
        _ioctl(fd, SIOCSIFFLAGS, ifreq)
    finally:
        os.close(fd)
