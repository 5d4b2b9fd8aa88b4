"""The container's output moved inside the kernel: from its pipes to the launcher's stdout and
stderr and to stdout_filename's file, without passing through the launcher's memory
(splice(2) and tee(2)); read and written, each byte was copied into the launcher and out
again to each destination.

What a caller's stream takes (a batch's logs, --json's line tracking) is copied as before
(runtime._wait), and so is an output whose destination refuses a splice."""

from __future__ import annotations

import errno
import os
import select

from nspawn.backends.linux import libc
from nspawn.output import to_launcher, write_all


class Mover:
    """Moves what the payload's pipe `source` holds to the launcher's descriptor `out` (1 or 2)
    and to `file` (stdout_filename's, which takes stdout and stderr both, or None); called
    when `source` is readable, returns False at its end.

    With a file, each chunk is first moved into a pipe of the launcher's own (`make_pipe`,
    which holds `chunk` bytes), duplicated from there (tee) into a second one for `out`, then
    moved to the file and passed on to `out`. A splice into a file holds its source pipe's
    lock while the file takes the bytes (page cache, ext4's journal, dirty-page throttling):
    from the payload's own pipe, the payload could not write on meanwhile. A reader of `out`
    gone (EPIPE) leaves the file alone to take the rest, as to_launcher lets the run go on;
    any other refusal by `out` (a file opened for appending, a non-blocking pipe that is full,
    a device that cannot splice) turns this output to reading and writing, with
    to_launcher's rules, for the rest of the run."""

    def __init__(self, source: int, out: int, file: int | None, make_pipe, chunk: int):
        self.source, self.out, self.file, self.chunk = source, out, file, chunk
        self.copying = False
        self.more = select.poll()  # whether the source has more for this call (or has ended)
        self.more.register(source, select.POLLIN)
        self.staging = self.for_out = None
        if file is not None:
            self.staging, self.for_out = make_pipe(), make_pipe()

    def __call__(self) -> bool:
        """Up to `chunk` bytes, as one read would take them (the wait looks at stops between
        calls): a caller's pipe (64 KiB) may take less at a time, and a wake each time would
        let the other pipe's output overtake what this one still holds."""
        total = 0
        while total < self.chunk:
            moved = self._copy() if self.copying else self._move()
            if not moved:
                return total > 0
            total += moved
            if not self.more.poll(0):
                break
        return True

    def _move(self) -> int:
        if self.file is None:
            if self.out is None:  # its reader went away
                return len(os.read(self.source, self.chunk))
            try:
                return os.splice(self.source, self.out, self.chunk)
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.out = None
                    return self._move()
                self.copying = True
                return self._copy()
        size = left = os.splice(self.source, self.staging[1], self.chunk)
        while left:
            # all of it unless the second pipe has fewer slots free than the bytes take
            # (tee duplicates from the head of the staging pipe, so only what is moved on)
            teed = left if self.out is None else libc.tee(self.staging[0], self.for_out[1], left)
            self._to_file(teed)
            if self.out is not None:
                self._pass_on(teed)
            left -= teed
        return size

    def _to_file(self, size: int) -> None:
        """The staging pipe's first `size` bytes to the file; read and written when its file
        system cannot splice (EINVAL, as for a file opened for appending), for the rest of the
        run too."""
        try:
            while size:
                size -= os.splice(self.staging[0], self.file, size)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.copying = True
            while size:
                data = os.read(self.staging[0], size)
                size -= len(data)
                write_all(self.file, data)

    def _pass_on(self, size: int) -> None:
        """The second pipe's `size` bytes on to `out`; read and written when `out` refuses."""
        try:
            while size:
                size -= os.splice(self.for_out[0], self.out, size)
        except OSError as e:
            if e.errno == errno.EPIPE:
                self.out = None
            else:
                self.copying = True
            while size:
                data = os.read(self.for_out[0], size)
                size -= len(data)
                if self.out is not None:
                    to_launcher(None, self.out, data)

    def _copy(self) -> int:
        data = os.read(self.source, self.chunk)
        if data:
            if self.out is not None:
                to_launcher(None, self.out, data)
            if self.file is not None:
                write_all(self.file, data)
        return len(data)

