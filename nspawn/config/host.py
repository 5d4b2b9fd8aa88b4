"""Checks of a config against the host, run before anything is touched."""

from __future__ import annotations

import os
import stat
import sys

from nspawn import exitcodes
from nspawn.backends import BACKENDS
from nspawn.config.build import simulated_host
from nspawn.config.derived import host_executable, stdout_host_path
from nspawn.config.fields import FIELDS, HOST_PATH
from nspawn.config.load import Finding
from nspawn.config.model import Config
from nspawn.hostfacts import cpu_count
from nspawn.units import mask_to_cpus

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MAX_LINKS = 40


def host_findings(config: Config) -> list[Finding]:
    windows = config.flavour == "windows"
    if windows != (sys.platform == "win32") and not (windows and simulated_host()):
        system = "Windows" if config.flavour == "windows" else "Linux"
        return [Finding((), f"this config is for a {system} host; its host checks cannot run on {sys.platform} (--dry-run shows its plan)")]
    findings = _privileges(config) + _directories(config)
    if not findings:
        findings += _binds(config)
        findings += _executable(config)
        findings += _working_directory(config)
        findings += _stdout(config)
        findings += _user(config)
    findings += _cpus(config)
    return findings


def _privileges(config: Config) -> list[Finding]:
    why = BACKENDS[config.backend].needs_root
    if why and os.geteuid() != 0:
        return [Finding((), f"the {config.backend} backend needs root: {why}; run nspawn as root (for example with sudo)",
                        exit_code=exitcodes.CANNOT_EXECUTE)]
    return []


def _files(config: Config) -> list[Finding]:
    """Host files a field names unless it holds one of its keywords (a seccomp profile)."""
    findings = []
    for field in FIELDS:
        value = getattr(config, field.name, None)
        if field.keywords and field.kind == HOST_PATH and value not in field.keywords and not os.path.isfile(value):
            findings.append(Finding((field.key,), f"{value} is not a file; expected {' or '.join(field.keywords)}, or an existing file"))
    return findings


def _directories(config: Config) -> list[Finding]:
    wanted = [(("process_directory",), config.process_directory, False),
              (("parent_layer_directory",), config.parent_layer_directory, False)]
    wanted += [(("mounts", i, "host_path"), m.host_path, config.flavour == "posix") for i, m in enumerate(config.mounts)]
    findings = _files(config)
    for where, path, file_ok in wanted:
        if path is None:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            findings.append(Finding(where, f"{path}: {e.strerror}; expected an existing directory"))
            continue
        if not stat.S_ISDIR(mode) and not (file_ok and stat.S_ISREG(mode)):
            findings.append(Finding(where, f"{path} is not a directory; expected an existing directory"))
    return findings


def resolve_in_root(root: str, path: str) -> str | None:
    """Host path of a container path under `root`, following symlinks as the container would
    (absolute targets restart at `root`); None when it does not exist or loops."""
    def find(parts: list[str]) -> str | None:
        candidate = os.path.join(root, *parts)
        return candidate if os.path.lexists(candidate) else None

    return follow(path, find, root)


def follow(path: str, find, top: str | None) -> str | None:
    """Container path `path` walked part by part as the container's kernel would: '..' and
    symbolic links resolved, absolute targets restarting at the top. `find(parts)` is the host
    path of the container path made of `parts`, or None where there is none; `top` is the
    container's / on the host. None when the path is not there or links loop."""
    pending = [c for c in path.split("/") if c]
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        found = find(done + [part])
        if found is None:
            return None
        if os.path.islink(found):
            hops += 1
            if hops > _MAX_LINKS:
                return None
            target = os.readlink(found)
            if target.startswith("/"):
                done = []
            pending = [c for c in target.split("/") if c] + pending
            continue
        done.append(part)
    return find(done) if done else top


def within(path: str, parent: str) -> bool:
    """Whether host path `path` is `parent` or below it (both as given, not resolved)."""
    parent = parent.rstrip(os.sep) or os.sep
    return path == parent or path.startswith(parent.rstrip(os.sep) + os.sep)


def _roots(config: Config) -> list[tuple[str, str]]:
    """(container path, host path) pairs, most specific first, ending with the root."""
    pairs = [(m.container_path, m.host_path) for m in config.mounts]
    if config.mapped_directory and config.process_directory:
        pairs.append((config.mapped_directory, config.process_directory))
    pairs.sort(key=lambda p: len(p[0]), reverse=True)
    root = config.parent_layer_directory if config.flavour == "posix" else None
    pairs.append(("/", root or "/"))
    return pairs


def locate_executable(config: Config) -> tuple[str | None, str]:
    """(host path or None, the container path looked for) of the executable."""
    exe = config.process_executable
    if config.flavour == "windows":
        return host_executable(config) or (exe if os.path.exists(exe) else None), exe
    if not exe.startswith("/"):
        if config.process_directory:
            exe = os.path.join(config.mapped_directory, exe)
        else:
            search = config.environment.get("PATH", DEFAULT_PATH)
            for directory in search.split(":"):
                if directory.startswith("/"):
                    found = _map(config, os.path.join(directory, exe))
                    if found and os.access(found, os.X_OK) and os.path.isfile(found):
                        return found, os.path.join(directory, exe)
            return None, exe
    return _map(config, exe), exe


def _map(config: Config, container_path: str, covering: str | None = None) -> str | None:
    """The host path behind a container path; with `covering`, as if the mount at that
    container path were not there (what it would cover)."""
    for inside, host in _roots(config):
        if inside == covering:
            continue
        if within(container_path, inside):
            rest = container_path[len(inside.rstrip("/")):]
            if inside == "/" and config.resolved_image is not None:
                from nspawn.images.use import lookup  # the layers as the overlay shows them

                return lookup(config.resolved_image.diffs, rest)
            found = resolve_in_root(host, rest)
            if found is not None and host != "/" and not within(os.path.realpath(found), os.path.realpath(host)):
                return None
            if found is not None and inside == "/" and _default_host_view(config):
                from nspawn.backends.linux.hostview import hides

                return None if hides(found) else found
            return found
    return None


def _default_host_view(config: Config) -> bool:
    """Whether the container's root is the host's OS view (hostview.py), which hides some of
    the host's paths."""
    return config.flavour == "posix" and not config.parent_layer_directory and config.host_view == "os"


def _binds(config: Config) -> list[Finding]:
    """A file bound over a directory of the container, or a directory over a file, fails at
    mount time, after setup: say so now, naming the mount."""
    if config.flavour != "posix":
        return []
    findings = []
    for i, m in enumerate(config.mounts):
        below = _map(config, m.container_path, covering=m.container_path)
        if below is None or not os.path.exists(below):
            continue  # made at run time
        source_is_dir, target_is_dir = os.path.isdir(m.host_path), os.path.isdir(below)
        if source_is_dir != target_is_dir:
            what = ("a directory", "a file") if source_is_dir else ("a file", "a directory")
            findings.append(Finding(("mounts", i, "container_path"), f"{m.host_path} is {what[0]} and {m.container_path} is {what[1]} in the container; expected {what[0]} there, or another container path"))
    return findings


def _executable(config: Config) -> list[Finding]:
    where = ("process_executable",)
    exe = config.process_executable
    behind = host_executable(config)
    if behind is not None:
        real = os.path.realpath(behind)
        if not within(real, os.path.realpath(config.process_directory)):
            return [Finding(where, f"{exe} resolves to {real}, outside the process directory; expected a file inside it", exit_code=exitcodes.NOT_FOUND)]
    host, wanted = locate_executable(config)
    if host is None or not os.path.exists(host):
        hint = ""
        if config.process_directory and "/" not in exe and config.flavour == "posix":
            # A bare name means the mapped directory's file when there is one: say so, and where PATH has it.
            found = locate_executable(config.replace(process_directory=None, mapped_directory=None))[1]
            hint = (f"; a bare name is looked up in the mapped directory when there is one"
                    + (f": for the command on PATH give its path, {found}" if found.startswith("/") else ""))
        return [Finding(where, f"{wanted} was not found in the container (after resolving '..' and symbolic links); expected an existing executable{hint}", exit_code=exitcodes.NOT_FOUND)]
    if not os.path.isfile(host):
        return [Finding(where, f"{wanted} is not a regular file; expected an executable file", exit_code=exitcodes.CANNOT_EXECUTE)]
    if sys.platform != "win32" and not os.access(host, os.X_OK):
        return [Finding(where, f"{wanted} is not executable (mode {stat.filemode(os.stat(host).st_mode)}); expected the execute permission", exit_code=exitcodes.CANNOT_EXECUTE)]
    return []


def _working_directory(config: Config) -> list[Finding]:
    """A Linux container's working directory must be there: chdir in the container would fail
    only after everything was set up (HCS reports its own error for its containers)."""
    wd = config.working_directory
    if wd is None or config.flavour != "posix":
        return []
    found = _map(config, wd)
    if found is None or not os.path.isdir(found):
        return [Finding(("working_directory",), f"{wd} is not a directory in the container (after resolving '..' and symbolic links); expected an existing directory")]
    return []


def _stdout(config: Config) -> list[Finding]:
    if not config.stdout_filename:
        return []
    target = stdout_host_path(config)
    parent = os.path.realpath(os.path.dirname(target))
    if not within(parent, os.path.realpath(config.process_directory)):
        return [Finding(("stdout_filename",), f"{config.stdout_filename} resolves to {parent}, outside the process directory; expected a path inside it")]
    if not os.path.isdir(parent):
        return [Finding(("stdout_filename",), f"the folder {os.path.dirname(target)} does not exist; expected an existing folder")]
    if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
        # the Linux run opens it without following links, and a FIFO or device never
        return [Finding(("stdout_filename",), f"{target} is there and is not a regular file; expected a regular file or none")]
    return []


def _user(config: Config) -> list[Finding]:
    """A user or group name the container's passwd or group file lacks, refused now rather than
    by the container's init after setup (which looks again, in case the files change)."""
    if config.user is None or config.flavour != "posix":
        return []
    from nspawn.backends.linux import users

    files = {name: _map(config, f"/etc/{name}") for name in ("passwd", "group")}
    try:
        users.lookup(config.user, files["passwd"] or "/nonexistent", files["group"] or "/nonexistent")
    except users.UnknownUser as e:
        return [Finding(("user",), f"found {config.user!r}: {e.strerror}")]
    return []


def _cpus(config: Config) -> list[Finding]:
    cpus = cpu_count()
    findings = []
    mask = config.limits.cpu_affinity
    if mask >> cpus:
        extra = [cpu for cpu in mask_to_cpus(mask) if cpu >= cpus]
        findings.append(Finding(("cpu_affinity_hex",), f"found {hex(mask)}, naming CPU {', '.join(map(str, extra[:8]))}{'…' if len(extra) > 8 else ''}; expected CPUs 0 to {cpus - 1} (this host has {cpus})"))
    if config.limits.cpus_count > cpus:
        findings.append(Finding(("cpus_count",), f"found {config.limits.cpus_count}; expected at most {cpus}, the CPUs this host has"))
    return findings
