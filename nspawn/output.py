"""Copying a container's output, and whether it goes to a terminal of the container's own: the
same in every backend."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def to_launcher(stream, fd: int, data: bytes) -> None:
    """To the caller's binary stream, else the launcher's own fd 1 or 2. A reader that went
    away (`| head`) must not end the run: the container goes on, and stdout_filename still
    gets everything."""
    try:
        if stream is not None:
            stream.write(data)
            stream.flush()
        else:
            write_all(fd, data)
    except OSError:
        pass


def terminal_asked(tty: str) -> bool:
    """The `tty` field's rule: a terminal (console) for the container when `always`, or `auto`
    with the launcher's stdin and stdout terminals. Whether the run may have one at all is the
    session's (Session.may_have_terminal); a backend may add its own conditions."""
    return tty == "always" or (tty == "auto" and os.isatty(0) and os.isatty(1))
