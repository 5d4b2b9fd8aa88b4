"""One idempotent release function per journal kind. They work from the journal's JSON alone,
so `nspawn cleanup` can run them in a fresh process after the launcher was SIGKILLed."""

from __future__ import annotations

import errno
import os
import _signal as signal  # its C module: the signal package imports enum, 2 ms of every run
import time

from nspawn.backends.linux import cgroups, userns

_WAIT_SECONDS = 5


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if there is no such process),
    which tells a process from a later one that reused its pid."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses


def _children(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of the process's children and their descendants."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except FileNotFoundError:
            continue
        for kid in kids:
            start = start_time(kid)
            if start is not None:
                found += [(kid, start)] + _children(kid)
    return found


def _kill(pid: int, start: int) -> bool:
    if start_time(pid) != start:
        return False  # gone, and its pid may belong to another process now
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def release_process(data: dict) -> None:
    """SIGKILL the process and whatever it forked, and wait until they are dead."""
    pid, start = data.get("pid"), data.get("start")
    if not pid or start_time(pid) != start:
        return  # never started, or already gone
    family = [(pid, start)] + _children(pid)  # a child it forked may not be in the journal yet
    killed = [(p, s) for p, s in family if _kill(p, s)]
    try:
        os.waitpid(pid, 0)  # our own child: reap it
    except ChildProcessError:
        pass
    deadline = time.monotonic() + _WAIT_SECONDS
    for p, s in killed:
        while (fields := _stat(p)) and int(fields[19]) == s and fields[0] != "Z":
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, f"process {p} survives SIGKILL")
            time.sleep(0.002)


def _remove_tree(path: str) -> None:
    # Most runs leave directories and a few files (the container's /etc/hosts) in the scratch
    # dir: those go without importing shutil, whose compression imports cost each launch about
    # 3 ms. Anything else (a link to a directory, an unreadable directory) falls back to rmtree.
    try:
        for top, dirs, files in os.walk(path, topdown=False, onerror=_raise):
            for name in files:
                os.unlink(os.path.join(top, name))
            for name in dirs:
                os.rmdir(os.path.join(top, name))
        os.rmdir(path)
    except OSError:
        import shutil

        shutil.rmtree(path)


def _raise(error: OSError) -> None:
    raise error


def release_scratch(data: dict) -> None:
    """Unmount whatever is still mounted below the scratch dir, then delete it."""
    from nspawn.backends.linux import libc, mounts

    path = data["path"]
    for point in mounts.mounted_under(path):
        try:
            libc.umount2(point, libc.MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise
    if os.path.lexists(path):
        _remove_tree(path)


def _nat(name: str):
    """A releaser of nat.py's, which only `network: nat` runs import."""

    def release(data: dict) -> None:
        from nspawn.backends.linux import nat

        getattr(nat, name)(data)

    release.__name__ = name
    return release


RELEASERS = {
    "process": release_process,
    "cgroup": cgroups.release,
    "scratch": release_scratch,
    "uid_range": userns.release_range,
    "nat-lease": _nat("release_lease"),
    "nat-ports": _nat("release_ports"),
    "nat-link": _nat("release_link"),
}
