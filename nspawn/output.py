"""Copying a container's output, the same in every backend."""

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
