"""The container's filesystem, built by its init (PID 1) inside the new mount namespace.

Order matters: propagation is made private before anything is mounted, so nothing reaches the
host's mount table; the root is pivoted before mount targets are made, so that `mkdir` and the
symbolic links of the lower layer resolve inside the container, never on the host; the old
root is detached last, once the bind sources have been taken from it.
"""

from __future__ import annotations

import errno
import os
import stat

from nspawn import exitcodes
from nspawn.backends.linux import libc
from nspawn.backends.linux.libc import MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT

OLD_ROOT = "/.nspawn-oldroot"
SCRATCH_DIRS = ("upper", "work", "root")  # in a container's scratch directory, as enter_root takes them
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
_DEV_LINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))


def _escape(path: str) -> str:
    # overlay's option parser splits on "," and lowerdir on ":"; a backslash escapes either.
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def shared_parent(layers: tuple) -> str | None:
    """The one directory all `layers` are in (an image store's short links), else None."""
    parents = {os.path.dirname(layer) for layer in layers}
    return parents.pop() if len(parents) == 1 else None


def overlay_options(lower: str | tuple, upper: str, work: str) -> str:
    """Layers (a tuple, top first) in one directory are named from inside it (enter_root
    changes to it): many layers then fit the one page mount options are given."""
    if isinstance(lower, tuple):
        relative = shared_parent(lower) is not None
        lower = ":".join(_escape(os.path.basename(layer) if relative else layer) for layer in lower)
    else:
        lower = _escape(lower)
    return f"lowerdir={lower},upperdir={_escape(upper)},workdir={_escape(work)}"


def enter_root(lower: str | tuple, upper: str, work: str, root: str) -> None:
    """`lower` is a directory, or an image's layers, top first."""
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    if isinstance(lower, tuple) and shared_parent(lower):
        os.chdir(shared_parent(lower))
    libc.mount("overlay", root, "overlay", 0, overlay_options(lower, upper, work))
    os.makedirs(root + OLD_ROOT, exist_ok=True)
    libc.pivot_root(root, root + OLD_ROOT)
    os.chdir("/")


def mount_system() -> None:
    """Fresh /proc (of the new PID namespace), a minimal /dev, /sys read-only and a private /tmp."""
    for target in ("/proc", "/dev", "/sys", "/tmp"):
        os.makedirs(target, exist_ok=True)
    libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    libc.mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=64k")
    old_umask = os.umask(0)  # device nodes are meant to be 0666 whatever the launcher's umask
    try:
        for name, major, minor in _DEVICES:
            os.mknod(f"/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
        for name in ("pts", "shm"):
            os.mkdir(f"/dev/{name}", 0o755)
    finally:
        os.umask(old_umask)
    libc.mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    libc.mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in _DEV_LINKS:
        os.symlink(target, f"/dev/{name}")
    libc.mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    libc.mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


class BindMismatch(OSError):
    """A bind source and its container path are not both files or both directories: the user's
    mistake, which the host checks refuse (exit 2) and which reaches the container's init only
    when a path changed after them; it ends the run the same way."""

    exit_code = exitcodes.USAGE


def bind(source: str, target: str, read_only: bool, is_file: bool) -> None:
    """Bind host `source` (a real path, no symlinks) at container path `target`. The target is
    resolved before anything is made for it, so that a symbolic link of the lower layer cannot
    have directories made on the host through the old root."""
    resolved = os.path.realpath(target)
    if resolved == OLD_ROOT or resolved.startswith(OLD_ROOT + "/"):
        raise OSError(0, f"{target} leads out of the container through a symbolic link")
    if os.path.exists(resolved) and os.path.isdir(resolved) == is_file:
        kinds = ("a file", "a directory") if is_file else ("a directory", "a file")
        raise BindMismatch(errno.ENOTDIR if is_file else errno.EISDIR,
                           f"{source} is {kinds[0]} and {target} is {kinds[1]} in the container; it cannot be mounted there")
    os.makedirs(os.path.dirname(resolved) if is_file else resolved, exist_ok=True)
    if is_file and not os.path.exists(resolved):
        os.close(os.open(resolved, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    libc.mount(OLD_ROOT + source, resolved, None, MS_BIND)
    if read_only:
        libc.mount(None, resolved, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def tmpfs(target: str, size_bytes: int) -> None:
    """An empty in-memory file system at container path `target` (resolved as a bind's is)."""
    resolved = os.path.realpath(target)
    if resolved == OLD_ROOT or resolved.startswith(OLD_ROOT + "/"):
        raise OSError(0, f"{target} leads out of the container through a symbolic link")
    os.makedirs(resolved, exist_ok=True)
    size = f",size={size_bytes}" if size_bytes else ""
    libc.mount("tmpfs", resolved, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777" + size)


def leave_old_root() -> None:
    libc.umount2(OLD_ROOT, MNT_DETACH)
    os.rmdir(OLD_ROOT)


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounted_under(path: str) -> list[str]:
    """Mount points at or below `path` in our mount namespace, deepest first."""
    path = path.rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def cgroup_view(hierarchies: list[tuple[str, str, str]]) -> None:
    """/sys/fs/cgroup as the container's cgroup namespace shows it, all read-only: the payload
    reads its own limits and can change none (nor reach any other group)."""
    base = "/sys/fs/cgroup"
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    libc.mount("tmpfs", base, "tmpfs", flags, "mode=755,size=16k")
    for name, fstype, options in hierarchies:
        target = os.path.join(base, name) if name else base
        os.makedirs(target, exist_ok=True)
        libc.mount(fstype, target, fstype, flags | MS_RDONLY, options or None)
    if not any(name == "" for name, _, _ in hierarchies):
        libc.mount(None, base, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
