"""The container's output on its way to the launcher's stdout and stderr and to stdout_filename's
file: moved inside the kernel (splice(2) and tee(2)) where the launcher's descriptor takes it,
without passing through the launcher's memory; read and written where a splice could stall (a
terminal, a socket) or is refused (a file opened for appending), where a caller watches what
goes there (--json), and from the payload's terminal. Either way a reader that stops taking it
stalls the payload, as writing there itself would, never the launcher: the wait goes on
minding the timeout and stops.

What a caller's stream takes (a batch's logs) is copied by runtime._wait."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat

from nspawn.backends.linux import libc
from nspawn.output import write_all


def _stalls_splice(fd: int) -> bool:
    """Whether a splice into `fd` can hold the launcher while its reader takes nothing: a
    terminal's or a socket's does, whatever SPLICE_F_NONBLOCK says (the flag is the pipes'); a
    pipe honours it, and a file or another device never stalls."""
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode) or os.isatty(fd)
    except OSError:
        return True  # closed: an Outlet drops what it is given


class Outlet:
    """The launcher's descriptor `fd` (1 or 2) as the copy writes to it: without blocking where
    a reader can stall it (a pipe, a terminal, a socket). O_NONBLOCK is not set on `fd`
    itself: its open file description is shared with the shell and whatever else holds it,
    which would then see EAGAIN. The copy writes to a pipe or a terminal through a description
    of its own (opened again through /proc, closed by `keep`'s owner), to a socket with
    MSG_DONTWAIT. A file is written as it is (it never stalls). `seen` hears what was
    written. A reader that went away (`| head`) must not end the run: what it would have had
    is dropped, as every write that fails is."""

    def __init__(self, fd: int, keep, seen=None):
        self.fd, self.seen, self._write = fd, seen, os.write
        self.pending, self.at = b"", 0  # what was written, from `at` on when the descriptor had no room for it
        try:
            # Only what is open for writing: the same file opened again must not be writable
            # where the launcher's own descriptor is not.
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
                return
            mode = os.fstat(fd).st_mode
            if stat.S_ISSOCK(mode):
                self._write = libc.send_nowait
            elif stat.S_ISFIFO(mode) or os.isatty(fd):
                self.fd = keep(os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC))
        except OSError as e:
            if e.errno == errno.ENXIO:  # a pipe without a reader
                self.fd = None

    def write(self, data: bytes) -> bool:
        """False when some of `data` waits for room (`flush` once `fd` is writable)."""
        self.pending, self.at = data, 0
        return self.flush()

    def flush(self) -> bool:
        while self.at < len(self.pending) and self.fd is not None:
            try:
                written = self._write(self.fd, memoryview(self.pending)[self.at:])
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    return False
                if e.errno == errno.EPIPE:
                    self.fd = None
                break
            if self.seen is not None:
                self.seen(self.pending[self.at:self.at + written])
            self.at += written
        self.pending, self.at = b"", 0
        return True

    def drop(self) -> None:
        """Give up on the reader: what waits for it is dropped, and so is all that comes."""
        self.fd, self.pending, self.at = None, b"", 0


class Mover:
    """Moves what the payload's output `source` has to the launcher's descriptor `out` (1 or 2)
    and to `file` (stdout_filename's, which takes stdout and stderr both, or None); called
    when `source` is readable.

    With a file, each chunk is first moved into a pipe of the launcher's own (`make_pipe`,
    which holds `chunk` bytes), duplicated from there (tee) into a second one for `out`, then
    moved to the file and passed on to `out`. A splice into a file holds its source pipe's
    lock while the file takes the bytes (page cache, ext4's journal, dirty-page throttling):
    from the payload's own pipe, the payload could not write on meanwhile. A reader of `out`
    gone (EPIPE) leaves the file alone to take the rest; any other refusal by `out` (a file
    opened for appending) turns this output to reading and writing through an Outlet (`keep`
    owns its descriptor) for the rest of the run. A file system that cannot splice into
    `file` has the file's share read and written. The output is read and written from the
    start where a splice into `out` could stall (_stalls_splice), where `read` takes it (the
    payload's terminal: None when it has nothing after all) and where `seen` watches what
    reaches `out`."""

    def __init__(self, source: int, out: int, file: int | None, make_pipe, keep, chunk: int, read=None, seen=None):
        self.source, self.out, self.file, self.keep, self.chunk = source, out, file, keep, chunk
        self.read = read or (lambda fd: os.read(fd, chunk))
        self.more = select.poll()  # whether the source has more for this call (or has ended)
        self.more.register(source, select.POLLIN)
        self.outlet = None  # once copying: what writes to `out`
        self.staging = self.for_out = None
        if read is not None or seen is not None or _stalls_splice(out):
            self.outlet = Outlet(out, keep, seen)
        elif file is not None:
            self.staging, self.for_out = make_pipe(), make_pipe()
        self.staged = 0  # bytes in the staging pipe, in neither the file nor on their way to `out`
        self.pending = 0  # bytes in the second pipe that `out` has not taken yet
        self.ended = False  # the source's end was read
        # `out` has no room for what is pending (its reader is slow, or stopped reading): the
        # caller stops reading the source, so the payload waits as it would writing to `out`
        # itself, and calls `resume` once `room` is writable, while the launcher goes on
        # minding the timeout and stops (a blocking write there would not return for either).
        self.waiting = False
        self.file_copied = False  # the file's file system refused a splice

    @property
    def room(self) -> int:
        """The descriptor to poll for room (POLLOUT) while `waiting`."""
        return self.outlet.fd if self.outlet is not None else self.out

    def __call__(self) -> bool:
        """Up to `chunk` bytes, as one read would take them (the wait looks at stops between
        calls): a caller's pipe (64 KiB) may take less at a time, and a wake each time would
        let the other pipe's output overtake what this one still holds. False when nothing
        was moved (`ended` says whether the source ended); True with `waiting` set when `out`
        has no room."""
        total = 0
        while total < self.chunk and not self.waiting:
            moved = self._copy() if self.outlet is not None else self._move()
            if not moved:
                return total > 0 or self.waiting
            total += moved
            if not self.more.poll(0):
                break
        return True

    def resume(self) -> None:
        """`out` has room (or has gone): pass on what waits for it; `waiting` says whether all went."""
        self.waiting = self.outlet is not None and not self.outlet.flush()
        if not self.waiting and self.staging is not None:
            self._flush()

    def drop_out(self) -> None:
        """Give up on `out` (the run was stopped or timed out while its reader took nothing):
        what waits for it is dropped, the file still gets every byte."""
        if self.pending:
            _discard(self.for_out[0], self.pending)
            self.pending = 0
        self.out, self.waiting = None, False
        if self.outlet is not None:
            self.outlet.drop()
        if self.staging is not None:
            self._flush()

    def _move(self) -> int:
        if self.file is None:
            if self.out is None:  # its reader went away
                return self._ended_after(len(os.read(self.source, self.chunk)))
            try:
                return self._ended_after(os.splice(self.source, self.out, self.chunk, flags=os.SPLICE_F_NONBLOCK))
            except BlockingIOError:  # no room in `out`: the source had bytes (poll said so)
                self.waiting = True
                return 0
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.out = None
                    return self._move()
                self._to_copying()
                return self._copy()
        size = self._ended_after(os.splice(self.source, self.staging[1], self.chunk))
        self.staged = size
        self._flush()
        return size

    def _ended_after(self, size: int) -> int:
        self.ended = not size
        return size

    def _to_copying(self) -> None:
        self.outlet = Outlet(self.out, self.keep)

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
            while size and not self.file_copied:
                size -= os.splice(self.staging[0], self.file, size)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.file_copied = True
        while size:
            data = os.read(self.staging[0], size)
            size -= len(data)
            write_all(self.file, data)

    def _pass_on(self) -> bool:
        """The second pipe's pending bytes on to `out`, without blocking; False when `out` has
        no room for all of them. Through an Outlet when `out` refuses a splice."""
        if self.outlet is None:
            try:
                while self.pending:
                    self.pending -= os.splice(self.for_out[0], self.out, self.pending, flags=os.SPLICE_F_NONBLOCK)
                return True
            except BlockingIOError:
                return False
            except OSError as e:
                if e.errno == errno.EPIPE:
                    _discard(self.for_out[0], self.pending)
                    self.out, self.pending = None, 0
                    return True
                self._to_copying()
        while self.pending:
            data = os.read(self.for_out[0], self.pending)
            self.pending -= len(data)
            if not self.outlet.write(data):
                return False
        return True

    def _copy(self) -> int:
        data = self.read(self.source)
        if data is None:  # a terminal with nothing waiting after all
            return 0
        self._ended_after(len(data))
        if data:
            if self.file is not None:
                write_all(self.file, data)
            self.waiting = not self.outlet.write(data)
        return len(data)


def _discard(fd: int, size: int) -> None:
    while size:
        size -= len(os.read(fd, min(size, 1 << 20)))
