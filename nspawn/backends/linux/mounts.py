"""The container's filesystem, built by its init (PID 1) inside the new mount namespace.

Order matters: propagation is made private before anything is mounted, so nothing reaches the
host's mount table; the root is pivoted before mount targets are made, so that `mkdir` and the
symbolic links of the lower layer resolve inside the container, never on the host; the old
root is detached last, once what init binds from the host's own tree (with private users:
/dev's nodes, and /sys on the host's network) has been taken from it.
"""

from __future__ import annotations

import errno
import os
import stat

from nspawn import exitcodes
from nspawn.backends.linux import hostview, libc
from nspawn.backends.linux.libc import MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT

OLD_ROOT = "/.nspawn-oldroot"
SCRATCH_DIRS = ("upper", "work", "root")  # in a container's scratch directory, made by enter_root
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


def overlay_options(lower: str | tuple, upper: str, work: str, above: str | None = None) -> str:
    """`lower`: a directory, or an image's layers (a tuple, top first); layers in one directory
    are named from inside it (enter_root changes to it), so that many fit the one page mount
    options are given. `above`: a second lower layer stacked over `lower` (the host view's)."""
    if isinstance(lower, tuple):
        relative = shared_parent(lower) is not None
        lowers = ":".join(_escape(os.path.basename(layer) if relative else layer) for layer in lower)
    else:
        lowers = _escape(lower)
    if above is not None:
        lowers = f"{_escape(above)}:{lowers}"
    return f"lowerdir={lowers},upperdir={_escape(upper)},workdir={_escape(work)}"


VIEW_DIR = "view"  # in the scratch dir, with the host view: the layer that hides (hostview.py)
LOWER_DIR = "lower"  # in the scratch dir: where the lower layer's detached copy is attached
IN_MEMORY_DIR = "memory"  # in the scratch dir, with a scratch size: the tmpfs the other layers are made in


def enter_root(lower: int | tuple, size_bytes: int, hide: tuple[str, ...] | None, userxattr: bool) -> None:
    """Mount the overlay and pivot into it, working in the run's scratch dir (the working
    directory, init.py: with private users no path to it is walkable). `lower`: the lower layer
    as the launcher opened it (hostpaths.layer), attached here, or an image's layers (paths in
    the store, top first). `size_bytes`: the upper layer is in a tmpfs of that size, of this
    namespace only (it goes with it); 0: on disk. `hide`: with the host view, nspawn's own paths
    it hides besides hostview's (None: no view). The view's layer is a small tmpfs of this
    namespace, stacked over the host's / as a second lower layer: nothing of it is written to
    disk, nor left to remove. `userxattr`: in a user namespace, whose root may not write the
    trusted.* attributes that mark whiteouts and opaque directories, overlayfs keeps them in
    user.* ones."""
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    if size_bytes:
        # On a directory of the scratch dir, entered by name: one mounted on the working
        # directory itself would not be seen through "."
        os.mkdir(IN_MEMORY_DIR, 0o700)
        libc.mount("tmpfs", IN_MEMORY_DIR, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=700,size={size_bytes}")
        os.chdir(IN_MEMORY_DIR)
    # Named relative to the scratch dir, the layers show so in the container's mount table: no
    # host path of the scratch. nosuid and nodev, as every mount but /dev: a node or a setuid
    # file in the lower layer or made in the upper does nothing here.
    upper, work, root = SCRATCH_DIRS
    image = isinstance(lower, tuple)
    for sub in SCRATCH_DIRS if image else (*SCRATCH_DIRS, LOWER_DIR):
        os.mkdir(sub, 0o700)
    if not image:
        libc.attach_tree(lower, LOWER_DIR)
    # The container's / takes the owner and mode of the lower layer's root (the image's top
    # one), as the container sees it (id-mapped, with private users): others' programs must
    # work there.
    st = os.stat(lower[0] if image else LOWER_DIR)
    os.chown(upper, st.st_uid, st.st_gid)
    os.chmod(upper, stat.S_IMODE(st.st_mode))
    view = None
    if hide is not None:
        view = VIEW_DIR
        os.mkdir(view, 0o700)
        libc.mount("tmpfs", view, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        hostview.prepare(view, LOWER_DIR, hide, userxattr)
    if image:
        # An image's layers live in the store, which only root writes: no link to fear there.
        # From inside their directory the scratch dir is reached through a descriptor.
        here = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if shared_parent(lower):
                os.chdir(shared_parent(lower))
            at = f"/proc/self/fd/{here}/"
            _mount_overlay(at + root, overlay_options(lower, at + upper, at + work))
            os.fchdir(here)
        finally:
            os.close(here)
    else:
        _mount_overlay(root, overlay_options(LOWER_DIR, upper, work, view) + (",userxattr" if userxattr else ""))
    os.makedirs(root + OLD_ROOT, exist_ok=True)
    libc.pivot_root(root, root + OLD_ROOT)
    os.chdir("/")


def _mount_overlay(target: str, options: str) -> None:
    """The container's root, `volatile` where the kernel has it (Linux 5.10). Its upper layer
    is the run's scratch, removed after the run, so syncing it buys nothing; and an overlay
    that is not volatile syncs, as it is unmounted when the container ends, the whole file
    system its upper layer is on (overlayfs's sync_fs), waiting for every dirty page other
    processes left there: beside a process writing to the host's disk a no-op run took twice
    as long."""
    try:
        libc.mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, options + ",volatile")
    except OSError as e:
        if e.errno != errno.EINVAL:  # an older kernel's answer to an option it does not know
            raise
        libc.mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV, options)


def _sized(size: str) -> str:
    return f"mode=1777,size={size}" if size else "mode=1777"


def mount_system(tmp_size: str, shm_size: str, private_users: bool) -> None:
    """Fresh /proc (of the new PID namespace), a minimal /dev, /sys read-only and a private /tmp
    (`tmp_size` and `shm_size`: the tmpfs size= of /tmp and /dev/shm, "" for the kernel's).
    `private_users`: in a user namespace, where no device node can be made: /dev's are the
    host's, bound (the device cgroup still decides what opens)."""
    for target in ("/proc", "/dev", "/sys", "/tmp"):
        os.makedirs(target, exist_ok=True)
    libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    libc.mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=64k")
    old_umask = os.umask(0)  # device nodes are meant to be 0666 whatever the launcher's umask
    try:
        for name, major, minor in _DEVICES:
            if private_users:  # no user namespace may make a device node: the host's, bound
                os.close(os.open(f"/dev/{name}", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
                libc.mount(f"{OLD_ROOT}/dev/{name}", f"/dev/{name}", None, MS_BIND)
                continue
            try:
                os.mknod(f"/dev/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
            except PermissionError:
                pass  # a device the launcher's own device group denies: the container goes without
        for name in ("pts", "shm"):
            os.mkdir(f"/dev/{name}", 0o755)
    finally:
        os.umask(old_umask)
    libc.mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    libc.mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, _sized(shm_size))
    for name, target in _DEV_LINKS:
        os.symlink(target, f"/dev/{name}")
    try:
        libc.mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        if e.errno != errno.EPERM:
            raise
        # Private users on the host's network: a sysfs belongs to a network namespace, and the
        # container's users do not own the host's. The host's /sys is the same view: bound,
        # every mount in it read-only.
        libc.mount(OLD_ROOT + "/sys", "/sys", None, MS_BIND | MS_REC)
        libc.restrict_tree("/sys", libc.MOUNT_ATTR_RDONLY | libc.MOUNT_ATTR_NOSUID | libc.MOUNT_ATTR_NODEV)
    libc.mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, _sized(tmp_size))


# Docker's defaults (moby's oci/defaults.go): what of /proc and /sys a container must not read
# (the host's keys, kernel memory, timers that leak other processes' addresses, firmware tables,
# power meters) and what it must not write (global sysctls such as kernel.core_pattern, which
# runs a program of its choosing as host root; the SysRq trigger; IRQ affinities).
MASKED = ("/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap")
READ_ONLY = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def mask_system() -> None:
    """Cover MASKED (an empty read-only tmpfs over a directory, /dev/null over a file) and make
    READ_ONLY read-only. The payload lacks CAP_SYS_ADMIN to undo either, and in a user namespace
    of its own these mounts are locked to it."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    for path in MASKED:
        try:
            is_dir = stat.S_ISDIR(os.lstat(path).st_mode)
        except FileNotFoundError:
            continue  # this kernel has none
        if is_dir:
            libc.mount("tmpfs", path, "tmpfs", flags | MS_RDONLY, "size=0,mode=555")
        else:
            libc.mount("/dev/null", path, None, MS_BIND)
    for path in READ_ONLY:
        if os.path.lexists(path):
            libc.mount(path, path, None, MS_BIND | MS_REC)
            libc.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)


class BindMismatch(OSError):
    """A bind source and its container path are not both files or both directories: the user's
    mistake, which the host checks refuse (exit 2) and which reaches the container's init only
    when a path changed after them; it ends the run the same way."""

    exit_code = exitcodes.USAGE


class UnusableTarget(OSError):
    """A container path that cannot be made to mount on: a symbolic link of the image that
    loops, or leads below a file or into a read-only place. The user's to change; exit 2."""

    exit_code = exitcodes.USAGE


def bind(tree: int, source: str, target: str, read_only: bool, is_file: bool) -> None:
    """Attach the detached mount `tree` (hostpaths.bind_source: host path `source` as the
    launcher opened it, id-mapped with private users) at container path `target`. The target
    is resolved before anything is made for it, so that a symbolic link of the lower layer
    cannot have directories made on the host through the old root."""
    resolved = os.path.realpath(target)
    if resolved == OLD_ROOT or resolved.startswith(OLD_ROOT + "/"):
        raise OSError(0, f"{target} leads out of the container through a symbolic link")
    if os.path.exists(resolved) and os.path.isdir(resolved) == is_file:
        kinds = ("a file", "a directory") if is_file else ("a directory", "a file")
        raise BindMismatch(errno.ENOTDIR if is_file else errno.EISDIR,
                           f"{source} is {kinds[0]} and {target} is {kinds[1]} in the container; it cannot be mounted there")
    try:
        os.makedirs(os.path.dirname(resolved) if is_file else resolved, exist_ok=True)
        if is_file and not os.path.exists(resolved):
            os.close(os.open(resolved, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    except OSError as e:
        via = f" (a symbolic link to {resolved})" if resolved != target else ""
        raise UnusableTarget(e.errno, f"{target}{via} cannot be made in the container to mount {source} on: "
                                      f"{e.strerror}; expected a path that can be made, or no symbolic link there") from None
    libc.attach_tree(tree, resolved)
    # A bind keeps its source's flags until remounted: nosuid and nodev always, so nothing a
    # payload leaves in a writable mapping (a setuid file, a device node) works in here.
    libc.mount(None, resolved, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0))


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
