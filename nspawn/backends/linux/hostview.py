"""What a container without a parent layer sees of the host: its operating system, read-only
under the overlay (writes go to the run's scratch), and none of its people, services or secrets.

A layer of its own, stacked between the host's / and the run's upper layer (mounts.enter_root),
says what the container does not see, as overlayfs reads a layer: a directory marked opaque
(trusted.overlay.opaque) hides everything below it and shows an empty one, a whiteout (a 0:0
character device) hides a file. That layer lives in a small tmpfs of the container's mount
namespace, so nothing is written to disk, shown in the container's mount table, or left to
release.
"""

from __future__ import annotations

import errno
import os
import stat

OS = "os"
FULL = "full"
FULL_WARNING = ("host_view is full: the container sees the host's whole root filesystem, its /root, /home, /run, "
                "/var (other containers' scratch included) and /etc/shadow (its writes still go to its own scratch)")

# Empty in the container unless mapped: people's files, services' state and sockets, mounts.
EMPTY = ("/root", "/home", "/run", "/var", "/srv", "/mnt", "/media")
# Absent: password hashes and the SSH host keys (every file of SSH_KEYS[0] whose name starts
# with SSH_KEYS[1]), which would let the payload be the host. Matched without glob: its
# patterns compile to regular expressions, a cost each launch would pay.
SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-")
SSH_KEYS = ("/etc/ssh", "ssh_host_")
# Made in the empty /var, which programs expect
VAR_TMP = "/var/tmp"


def hidden(extra: tuple[str, ...] = ()) -> list[tuple[str, bool]]:
    """(host path, shown as an empty directory rather than absent), in making order. `extra`:
    more host paths to hide (nspawn's own state and scratch when they lie elsewhere)."""
    found = [(path, True) for path in EMPTY] + [(path, False) for path in SECRETS]
    try:
        keys = sorted(name for name in os.listdir(SSH_KEYS[0]) if name.startswith(SSH_KEYS[1]))
    except OSError:
        keys = []
    found += [(os.path.join(SSH_KEYS[0], name), False) for name in keys]
    found += [(path, False) for path in extra if not any(_within(path, d) for d in EMPTY) and path != "/"]
    return found


def hides(path: str) -> bool:
    """Whether a host path is out of the container's sight under the default view (the host
    checks ask, so that what they accept the container finds). The EMPTY directories
    themselves, and /var/tmp, are there, empty."""
    if path == VAR_TMP:
        return False
    return (any(path.startswith(d + "/") for d in EMPTY) or path in SECRETS
            or (os.path.dirname(path) == SSH_KEYS[0] and os.path.basename(path).startswith(SSH_KEYS[1])))


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def prepare(layer: str, lower: str, extra: tuple[str, ...] = (), userxattr: bool = False) -> None:
    """Make the empty directory `layer`, to be stacked over `lower` (the host's / as the overlay
    takes it), hide what hidden() names. Directories on the way are made with the mode and
    owner `lower` shows them with (id-mapped, with private users), so the container sees them
    unchanged. `userxattr`: the overlay reads its marks from user.* attributes (in a user
    namespace, whose root may not write trusted.* ones)."""
    opaque = ("user" if userxattr else "trusted") + ".overlay.opaque"
    for path, empty in hidden(extra):
        try:
            st = os.lstat(lower + path)
        except FileNotFoundError:
            continue  # absent already
        _parents(layer, lower, path)
        target = layer + path
        if empty and stat.S_ISDIR(st.st_mode):
            os.mkdir(target)
            os.chown(target, st.st_uid, st.st_gid)
            os.chmod(target, stat.S_IMODE(st.st_mode))
            try:
                os.setxattr(target, opaque, b"y")
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                os.rmdir(target)  # a tmpfs without xattrs (CONFIG_TMPFS_XATTR off): hide it whole instead
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                continue
            if path == "/var":
                os.mkdir(layer + VAR_TMP)
                os.chmod(layer + VAR_TMP, 0o1777)
        else:
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def _parents(layer: str, lower: str, path: str) -> None:
    parts = [p for p in path.split("/") if p][:-1]
    current = ""
    for part in parts:
        current += "/" + part
        if os.path.isdir(layer + current):
            continue
        st = os.stat(lower + current)
        os.mkdir(layer + current)
        os.chown(layer + current, st.st_uid, st.st_gid)
        os.chmod(layer + current, stat.S_IMODE(st.st_mode))
