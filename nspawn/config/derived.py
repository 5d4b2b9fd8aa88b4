"""Paths worked out from a validated Config, the same for the config checks, both backends and
the batch: what the container executes, the host file behind it, and where stdout_filename
lands on the host."""

from __future__ import annotations

import posixpath

from nspawn.config.model import Config


def is_drive_absolute(path: str) -> bool:
    """`C:\\x` or `C:/x`: the only absolute form a Windows container path takes. (No regular
    expression: compiling one at import costs every launch more than this check ever will.)"""
    return len(path) > 2 and path[0].isascii() and path[0].isalpha() and path[1] == ":" and path[2] in "\\/"


def is_container_absolute(path: str, flavour: str) -> bool:
    return is_drive_absolute(path) if flavour == "windows" else path.startswith("/")


def host_path_module(path: str):
    """ntpath for a Windows host path; posixpath for this POSIX host's own, which HCS configs
    also have under the simulator's test seam (nspawn/backends/hcs/native/loader.py)."""
    if path.startswith("/"):
        return posixpath
    import ntpath  # only here: a POSIX config, every Linux launch, need not import it

    return ntpath


def _container_module(flavour: str):
    return host_path_module("C:") if flavour == "windows" else posixpath


def _host_join(directory: str, relative: str) -> str:
    """`relative` (either separator) below the host directory, in the directory's own flavour."""
    return host_path_module(directory).join(directory, *relative.replace("\\", "/").split("/"))


def container_executable(config: Config) -> str:
    """The executable's container path: a relative one is in the mapped directory; an absolute
    one, or a command name looked up on PATH (no process directory), stays as given."""
    exe = config.process_executable
    if config.process_directory and config.mapped_directory and not is_container_absolute(exe, config.flavour):
        return _container_module(config.flavour).join(config.mapped_directory, exe)
    return exe


def host_executable(config: Config) -> str | None:
    """The host file behind an executable relative to the process directory (checked before
    the run and again at run time: it may have changed); None otherwise."""
    exe = config.process_executable
    if config.process_directory and not is_container_absolute(exe, config.flavour):
        return _host_join(config.process_directory, exe)
    return None


def stdout_host_path(config: Config) -> str | None:
    """The host file stdout_filename names in the process directory."""
    if not config.stdout_filename:
        return None
    return _host_join(config.process_directory, config.stdout_filename)
