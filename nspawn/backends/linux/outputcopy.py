"""The container's output moved inside the kernel: from its pipes to the launcher's stdout and
stderr and to stdout_filename's file, without passing through the launcher's
memory (splice(2) and tee(2)). Through user space, the copy of 200 MB cost as much again as
the payload's own writes.

What a caller's stream takes (a batch's logs, --json's line tracking) is copied as before
(runtime._wait), and so is an output whose destination refuses a splice."""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import termios

from nspawn.backends.linux import libc
from nspawn.output import to_launcher, write_all


class Mover:
    """Moves what the payload's pipe `source` holds to the launcher's descriptor `out` (1 or 2)
    and to `file` (stdout_filename's, which takes stdout and stderr both, or None); called
    when `source` is readable, returns False at its end.

    With a file the bytes are duplicated (tee) into a pipe of the launcher's own (`make_pipe`,
    which holds `chunk` bytes), moved to the file (splice), then from that pipe to `out`. Not
    tee'd straight into `out`: a caller's pipe (64 KiB) would cut the file's writes to its
    size, and a file's cost is per write. A reader of `out` gone (EPIPE) leaves the file alone
    to take the rest, as to_launcher lets the run go on; any other refusal by `out` (a file
    opened for appending, a non-blocking pipe that is full, a device that cannot splice) turns
    this output to reading and writing, with to_launcher's rules, for the rest of the run."""

    def __init__(self, source: int, out: int, file: int | None, make_pipe, chunk: int):
        self.source, self.out, self.file, self.chunk = source, out, file, chunk
        self.copying = False
        self.staging = make_pipe() if file is not None else None

    def __call__(self) -> bool:
        """Up to `chunk` bytes, as one read would take them (the wait looks at stops between
        calls): a caller's pipe (64 KiB) takes less at a time, and a wake per 64 KiB would
        let the other pipe's output overtake what this one still holds."""
        total = 0
        while total < self.chunk:
            moved = self._copy() if self.copying else self._move()
            if moved is None:  # interrupted by a signal: the wait has it, and calls again
                return True
            if not moved:
                return total > 0
            total += moved
            if not _waiting(self.source):
                break
        return True

    def _move(self) -> int | None:
        if self.out is None:  # its reader went away
            if self.file is None:
                return len(os.read(self.source, self.chunk))
            return os.splice(self.source, self.file, self.chunk)
        if self.file is None:
            try:
                return os.splice(self.source, self.out, self.chunk)
            except OSError as e:
                return self._refused(e)
        try:
            moved = libc.tee(self.source, self.staging[1], self.chunk)
        except OSError as e:
            if e.errno == errno.EINTR:  # ctypes does not retry as os calls do
                return None
            raise
        left = moved
        while left:  # there, as tee said: the splice cannot wait
            left -= os.splice(self.source, self.file, left)
        self._pass_on(moved)
        return moved

    def _pass_on(self, size: int) -> None:
        """The staging pipe's `size` bytes on to `out`; read and written when `out` refuses."""
        try:
            while size:
                size -= os.splice(self.staging[0], self.out, size)
        except OSError as e:
            if e.errno == errno.EPIPE:
                self.out = None
            else:
                self.copying = True
            while size:
                data = os.read(self.staging[0], size)
                size -= len(data)
                if self.out is not None:
                    to_launcher(None, self.out, data)

    def _refused(self, error: OSError) -> int | None:
        if error.errno == errno.EPIPE:
            self.out = None
            return self._move()
        self.copying = True
        return self._copy()

    def _copy(self) -> int:
        data = os.read(self.source, self.chunk)
        if data:
            if self.out is not None:
                to_launcher(None, self.out, data)
            if self.file is not None:
                write_all(self.file, data)
        return len(data)


def _waiting(fd: int) -> int:
    """How many bytes the pipe `fd` holds."""
    size = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, size)
    return int.from_bytes(size, sys.byteorder)
