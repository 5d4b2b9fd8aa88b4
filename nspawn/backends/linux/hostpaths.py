"""Host paths a run acts on, each resolved once without following a symbolic link, then used by
descriptor: a payload may have planted a link (or swaps one in while the launcher works) in a
directory it can write, and root following it would bind or write what the payload chose.

A bind source, and the overlay's lower layer, each becomes a detached copy of its mount
(open_tree), which init attaches in the container: what was opened is what is mounted, whatever
the path names by then (with private users the same copy is id-mapped first, userns.idmap). The
output file is opened beneath the process directory, a regular file only, never created through
a link.
"""

from __future__ import annotations

import errno
import os
import stat

from nspawn import exitcodes
from nspawn.backends.linux import libc
from nspawn.errors import LaunchError

_NO_LINKS = libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS


def _link_refusal(path: str) -> LaunchError:
    real = os.path.realpath(path)
    return LaunchError(f"{path} goes through a symbolic link (to {real}); host paths are opened without following "
                       "links, which a container could have planted: give the path without links", exitcodes.USAGE)


def _open(path: str, flags: int, failed) -> int:
    """An O_PATH descriptor of host path `path`, opened without following a link (refused,
    exit 2); `failed(strerror)` is the LaunchError for any other failure."""
    try:
        return libc.openat2(libc.AT_FDCWD, path, libc.O_PATH | flags, _NO_LINKS)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_refusal(path) from None
        raise failed(e.strerror) from None


def bind_source(path: str, target: str) -> tuple[int, bool]:
    """(a detached copy of the mount at `path`, whether it is a file) for a bind at container
    path `target`; the caller closes the descriptor."""
    fd = _open(path, 0, lambda why: LaunchError(f"{path}: {why}; it cannot be mounted at {target}"))
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise LaunchError(f"{path} is neither a directory nor a regular file; it cannot be mounted at {target}",
                              exitcodes.USAGE)
        return libc.clone_tree(fd), stat.S_ISREG(mode)
    finally:
        os.close(fd)


def layer(path: str) -> int:
    """A detached copy of the mount at directory `path`, the overlay's lower layer (the parent
    layer, or the host's /); a path through a symbolic link is refused (exit 2). The caller
    closes the descriptor."""
    fd = _open(path, os.O_DIRECTORY, lambda why: LaunchError(f"parent_layer_directory {path}: {why}", exitcodes.USAGE))
    try:
        return libc.clone_tree(fd)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def open_output(directory: str, name: str, shown: str) -> int:
    """Open `name` (relative, no "..") below host directory `directory` for writing, truncated:
    an existing regular file, or a new one. A link anywhere on the way, or something else there
    (a FIFO, whose open would wait for a reader forever; a device, which would get the output),
    is refused with exit 2. `shown` names it in messages."""
    base = _open(directory, os.O_DIRECTORY, lambda why: LaunchError(f"{shown}: {directory}: {why}", exitcodes.USAGE))
    beneath = _NO_LINKS | libc.RESOLVE_BENEATH
    try:
        for _ in range(3):  # a file that appears or goes between the two opens: look again
            try:
                found = libc.openat2(base, name, libc.O_PATH | os.O_NOFOLLOW, beneath)
            except OSError as e:  # NativeError: an OSError, not of the errno's own subclass
                if e.errno != errno.ENOENT:
                    raise
                try:  # O_EXCL: made here, never through a link that appeared meanwhile
                    return libc.openat2(base, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, beneath, 0o644)
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        raise
                    continue
            try:
                mode = os.fstat(found).st_mode
                if stat.S_ISLNK(mode):
                    raise OSError(errno.ELOOP, "a symbolic link")
                if not stat.S_ISREG(mode):
                    raise LaunchError(f"{shown} is {_kind(mode)}; expected a regular file (or none)", exitcodes.USAGE)
                # Reopened through the descriptor: the very file just looked at, not whatever
                # the name holds now. O_NONBLOCK as well, in case that were ever not a file.
                fd = os.open(f"/proc/self/fd/{found}", os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC)
                os.set_blocking(fd, True)
                return fd
            except FileNotFoundError:
                continue
            finally:
                os.close(found)
        raise LaunchError(f"{shown} keeps changing as it is opened", exitcodes.USAGE)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EXDEV):
            raise LaunchError(f"{shown} is or goes through a symbolic link; expected a regular file", exitcodes.USAGE) from None
        raise LaunchError(f"{shown}: {e.strerror}") from None
    finally:
        os.close(base)
