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
    any other refusal by `out` (a file opened for appending, a device that cannot splice)
    turns this output to reading and writing, with to_launcher's rules, for the rest of the
    run."""

    def __init__(self, source: int, out: int, file: int | None, make_pipe, chunk: int):
        self.source, self.out, self.file, self.chunk = source, out, file, chunk
        self.copying = False
        self.more = select.poll()  # whether the source has more for this call (or has ended)
        self.more.register(source, select.POLLIN)
        self.staging = self.for_out = None
        if file is not None:
            self.staging, self.for_out = make_pipe(), make_pipe()
        self.staged = 0  # bytes in the staging pipe, in neither the file nor on their way to `out`
        self.pending = 0  # bytes in the second pipe that `out` has not taken yet
        # `out` has no room for what is pending (its reader is slow, or stopped reading): the
        # caller stops reading the source, so the payload waits as it would writing to `out`
        # itself, and calls `resume` once `out` has room, while the launcher goes on minding
        # the timeout and stops (a blocking splice there would not return for either).
        self.waiting = False

    def __call__(self) -> bool:
        """Up to `chunk` bytes, as one read would take them (the wait looks at stops between
        calls): a caller's pipe (64 KiB) may take less at a time, and a wake each time would
        let the other pipe's output overtake what this one still holds. False at the source's
        end; True with `waiting` set when `out` has no room."""
        total = 0
        while total < self.chunk and not self.waiting:
            moved = self._copy() if self.copying else self._move()
            if not moved:
                return total > 0 or self.waiting
            total += moved
            if not self.more.poll(0):
                break
        return True

    def resume(self) -> None:
        """`out` has room (or has gone): pass on what waits for it; `waiting` says whether all went."""
        self.waiting = False
        if self.file is not None:
            self._flush()

    def drop_out(self) -> None:
        """Give up on `out` (the run was stopped or timed out while its reader took nothing):
        what waits for it is dropped, the file still gets every byte."""
        if self.pending:
            _discard(self.for_out[0], self.pending)
            self.pending = 0
        self.out, self.waiting = None, False
        if self.file is not None:
            self._flush()

    def _move(self) -> int:
        if self.file is None:
            if self.out is None:  # its reader went away
                return len(os.read(self.source, self.chunk))
            try:
                return os.splice(self.source, self.out, self.chunk, flags=os.SPLICE_F_NONBLOCK)
            except BlockingIOError:  # no room in `out`: the source had bytes (poll said so)
                self.waiting = True
                return 0
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.out = None
                    return self._move()
                self.copying = True
                return self._copy()
        size = os.splice(self.source, self.staging[1], self.chunk)
        self.staged = size
        self._flush()
        return size

    def _flush(self) -> None:
        """What waits for `out`, then the staged bytes to the file and on to `out`, as far as
        `out` takes them without blocking (`waiting` set where it stops)."""
        while True:
            if self.pending and not self._pass_on():
                self.waiting = True
                return
            if not self.staged:
                return
            # all of it unless the second pipe has fewer slots free than the bytes take
            # (tee duplicates from the head of the staging pipe, so only what is moved on)
            teed = self.staged if self.out is None else libc.tee(self.staging[0], self.for_out[1], self.staged)
            self._to_file(teed)
            self.staged -= teed
            if self.out is not None:
                self.pending = teed

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

    def _pass_on(self) -> bool:
        """The second pipe's pending bytes on to `out`, without blocking; False when `out` has
        no room for all of them. Read and written when `out` refuses a splice."""
        try:
            while self.pending:
                self.pending -= os.splice(self.for_out[0], self.out, self.pending, flags=os.SPLICE_F_NONBLOCK)
            return True
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno == errno.EPIPE:
                self.out = None
            else:
                self.copying = True
        while self.pending:
            data = os.read(self.for_out[0], self.pending)
            self.pending -= len(data)
            if self.out is not None:
                to_launcher(None, self.out, data)
        return True

    def _copy(self) -> int:
        data = os.read(self.source, self.chunk)
        if data:
            if self.out is not None:
                to_launcher(None, self.out, data)
            if self.file is not None:
                write_all(self.file, data)
        return len(data)


def _discard(fd: int, size: int) -> None:
    while size:
        size -= len(os.read(fd, min(size, 1 << 20)))
