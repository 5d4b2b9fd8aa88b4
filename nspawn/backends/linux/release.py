"""One idempotent release function per journal kind. They work from the journal's JSON alone,
so `nspawn cleanup` can run them in a fresh process after the launcher was SIGKILLed."""

from __future__ import annotations

import errno
import os
import signal
import time

from nspawn.backends.linux import cgroups

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


def release_process(data: dict) -> None:
    pid, start = data.get("pid"), data.get("start")
    if not pid or start_time(pid) != start:
        return  # never started, or gone (its pid may belong to another process now)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)  # our own child: reap it
        return
    except ChildProcessError:
        pass
    deadline = time.monotonic() + _WAIT_SECONDS
    while (fields := _stat(pid)) and int(fields[19]) == start and fields[0] != "Z":
        if time.monotonic() > deadline:
            raise OSError(errno.ETIMEDOUT, f"process {pid} survives SIGKILL")
        time.sleep(0.005)


def release_scratch(data: dict) -> None:
    """Unmount whatever is still mounted below the scratch dir, then delete it."""
    import shutil

    from nspawn.backends.linux import libc, mounts

    path = data["path"]
    for point in mounts.mounted_under(path):
        try:
            libc.umount2(point, libc.MNT_DETACH)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise
    if os.path.lexists(path):
        shutil.rmtree(path)


RELEASERS = {
    "process": release_process,
    "cgroup": cgroups.release,
    "scratch": release_scratch,
}
