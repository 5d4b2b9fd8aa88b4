"""Private users (`private_users: pick`): the container's uids and gids 0-65535 are a range of
host ids no other live container holds, so its root is nobody on the host.

The range: a file per range taken, named by its first id, in the state directory, made with
link(2) (which fails if the name exists: two launchers never get the same range) and holding
the container's id, so that its releaser, from the journal alone, removes only its own.

The user namespace: a short-lived child unshares one and the launcher writes its id maps; its
descriptor then serves twice: the detached copies of the mapped directories and of the root's
lower layer (hostpaths.py) are id-mapped through it (mount_setattr(MOUNT_ATTR_IDMAP)), so that a file
owned by uid N on the host is owned by N in the container too; and the container's first
process joins it (`enter`) before making its other namespaces, which it then owns.
"""

from __future__ import annotations

import errno
import os

from nspawn.backends.linux import libc
from nspawn.errors import LaunchError

SIZE = 65536  # ids per container: 0-65535, as every distribution's users and nobody need
FIRST = 0x80000  # systemd's range for containers, 524288-1879048191, clear of the host's own users
LAST = 0x6FFFFFFF
DIRECTORY = "uid-ranges"


def directory(state_dir: str) -> str:
    return os.path.join(state_dir, DIRECTORY)


def allocate(where: str, owner: str) -> int:
    """Take the first free range for `owner` (a container id); returns its first host id."""
    os.makedirs(where, mode=0o700, exist_ok=True)
    claim = os.path.join(where, f".{owner}")
    with open(claim, "w") as f:
        f.write(owner)
    try:
        for base in range(FIRST, LAST + 1 - SIZE + 1, SIZE):
            try:
                os.link(claim, os.path.join(where, str(base)))
                return base
            except FileExistsError:
                continue
        raise LaunchError(f"private_users: every id range in {where} is taken (nspawn cleanup frees those of killed launchers)")
    finally:
        os.unlink(claim)


def release_range(data: dict) -> None:
    """Remove the range files `data["owner"]` holds (at most one; a claim cut short, too)."""
    where, owner = data["directory"], data["owner"]
    try:
        names = os.listdir(where)
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(where, name)
        try:
            with open(path) as f:
                mine = f.read() == owner
        except FileNotFoundError:
            continue
        if mine:
            os.unlink(path)


def map_line(base: int) -> str:
    return f"0 {base} {SIZE}\n"


def namespace(base: int) -> int:
    """A descriptor of a new user namespace mapping ids 0-65535 to base.. on the host. Made by a
    child that unshares it and waits until the launcher wrote its maps and opened it."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            # Only its own two ends: a copy of another launcher thread's pipe would hold that
            # thread's end of file back (two runs starting at once would wait on each other).
            low = 3
            for fd in sorted((ready_w, done_r)):
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, os.sysconf("SC_OPEN_MAX"))
            libc.unshare(libc.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(done_r, 1)  # end of file: the launcher has what it needs
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise LaunchError("private_users: this kernel refuses a user namespace (unshare CLONE_NEWUSER failed; "
                              "see user.max_user_namespaces and kernel.unprivileged_userns_clone)")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(map_line(base))
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def idmap(tree: int, userns_fd: int, path: str) -> None:
    """Id-map the detached mount `tree` (hostpaths' copy of host path `path`) through the user
    namespace `userns_fd`: a file owned by host uid N reads as N in the container."""
    try:
        libc.idmap_tree(tree, userns_fd)
    except OSError as e:
        why = {errno.EINVAL: "its filesystem cannot be id-mapped (ext4, xfs, btrfs and tmpfs from Linux 6.3 can; "
                             "overlayfs, NFS and FUSE cannot)",
               errno.ENOSYS: "this kernel has no id-mapped mounts (Linux 5.12 and later do)",
               errno.EPERM: "the kernel refuses it"}.get(e.errno, "")
        raise LaunchError(f"private_users: {path} cannot be mapped into the container with its owners: "
                          f"{why}{'; ' if why else ''}{e}") from None


def enter(userns_fd: int) -> None:
    """Join the container's user namespace as its root (in a process with one thread): what it
    makes afterwards, namespaces and mounts, belongs to that namespace."""
    libc.setns(userns_fd, libc.CLONE_NEWUSER)
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)
