"""The container's /etc/hosts, /etc/resolv.conf and /etc/localtime, as a job expects them:
its host name resolves, its resolvers are reachable, its clock reads the host's zone.

The launcher reads the host's files (`prepare`, before the fork); the container's init writes
them into the container's root (`install`), after the root is pivoted (symbolic links of the
image resolve inside it) and before any mount (so a write lands in the overlay's upper layer,
never in a mapped host directory). Writes replace a symbolic link instead of following it: an
image built for systemd-resolved has /etc/resolv.conf pointing at a file that does not exist.
`install` runs in a forked process: no imports, no locks.
"""

from __future__ import annotations

import os
import stat

from nspawn.backends.linux.mounts import OLD_ROOT
from nspawn.records import record

# The host's files; tests point them elsewhere rather than touch the real /etc.
HOST_RESOLV_CONF = "/etc/resolv.conf"
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"  # systemd-resolved's own upstream servers
HOST_LOCALTIME = "/etc/localtime"
ZONEINFO = "/usr/share/zoneinfo/"
HOSTS = "/etc/hosts"
RESOLV_CONF = "/etc/resolv.conf"
LOCALTIME = "/etc/localtime"
HOST_NAME_ADDRESS = "127.0.1.1"  # Debian's address for the machine's own name: loopback, so it is there without a network
_DEFAULT_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@record
class Write:
    """One file of the container's /etc, as the launcher decided it."""

    path: str  # container path
    data: bytes | None = None  # the content; None with no link: the file is removed
    link: str | None = None  # a symbolic link's target, used when it exists in the container (else data)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 20)
    except OSError:
        return None


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def _nameservers(text: str) -> list[str]:
    return [words[1] for words in map(str.split, text.splitlines()) if len(words) > 1 and words[0] == "nameserver"]


def resolv_conf(host: str, upstream: str | None, shares_host_network: bool) -> tuple[str, str | None]:
    """(the container's resolv.conf, a warning or None) from the host's and systemd-resolved's
    upstream file. Loopback resolvers (systemd-resolved's 127.0.0.53, a local dnsmasq) listen in
    the host's network namespace: they give way to the upstream servers resolved names, as
    Docker does; without those, the others are kept, and a container with a network of its
    own is told it may not reach them."""
    servers = _nameservers(host)
    loopback = [s for s in servers if _is_loopback(s)]
    if not loopback:
        return host, None
    if upstream is not None and any(not _is_loopback(s) for s in _nameservers(upstream)):
        return "".join(line + "\n" for line in upstream.splitlines()
                       if not (line.split()[:1] == ["nameserver"] and _is_loopback(line.split()[1]))), None
    kept = "".join(line + "\n" for line in host.splitlines()
                   if not (line.split()[:1] == ["nameserver"] and len(line.split()) > 1 and _is_loopback(line.split()[1])))
    if len(loopback) < len(servers):
        return kept, (f"the host's resolv.conf names the loopback resolver {', '.join(loopback)}, which the container "
                      f"cannot reach, and {RESOLVED_UPSTREAM} names no upstream server: the container gets the others")
    if shares_host_network:
        return host, None  # the same network namespace: the host's loopback is the container's
    return host, (f"the host's resolv.conf names only the loopback resolver {', '.join(loopback)} and {RESOLVED_UPSTREAM} "
                  "names no upstream server: names will not resolve in the container (set resolv_conf to keep, or "
                  "map a resolv.conf of your own)")


def _hidden_link(path: str, hidden) -> bytes | None:
    """The host's file `path`, when the container's root is the host's own view and `path` is a
    link into what that view hides (`hidden`: hostview.hides; systemd-resolved's resolv.conf is
    in /run, which it empties): kept as it is, the link would dangle in the container."""
    if hidden is None or not os.path.islink(path) or not hidden(os.path.realpath(path)):
        return None
    return _read(path)


def prepare(resolv_mode: str, timezone: str, shares_host_network: bool, warn, hidden=None) -> tuple[Write, ...]:
    """The writes the host's files call for; `warn` is told what cannot be done as asked.
    `hidden`: with the host's view as the container's root, whether it hides a host path; the
    root's own files (`keep`) are then the host's, copied where their links would dangle."""
    writes = []
    for mode, host, path in ((resolv_mode, HOST_RESOLV_CONF, RESOLV_CONF), (timezone, HOST_LOCALTIME, LOCALTIME)):
        data = _hidden_link(host, hidden) if mode == "keep" else None
        if data is not None:
            writes.append(Write(path, data))
    if resolv_mode == "none":
        writes.append(Write(RESOLV_CONF))
    elif resolv_mode == "copy-host":
        host = _read(HOST_RESOLV_CONF)
        if host is None:
            warn(f"resolv_conf is copy-host, but the host's {HOST_RESOLV_CONF} cannot be read: the container keeps its own")
        else:
            upstream = _read(RESOLVED_UPSTREAM)
            text, warning = resolv_conf(host.decode(errors="replace"),
                                        None if upstream is None else upstream.decode(errors="replace"), shares_host_network)
            if warning:
                warn(warning)
            writes.append(Write(RESOLV_CONF, text.encode()))
    if timezone == "copy-host":
        data = _read(HOST_LOCALTIME)
        if data is not None:  # without one the host is on UTC, as a container without one is
            target = os.readlink(HOST_LOCALTIME) if os.path.islink(HOST_LOCALTIME) else ""
            zone = target.partition("zoneinfo/")[2]
            writes.append(Write(LOCALTIME, data, ZONEINFO + zone if zone else None))
    return tuple(writes)


def hosts_with(existing: str, hostname: str) -> str | None:
    """The container's /etc/hosts with a line for its host name, or None when it has one."""
    for words in map(str.split, existing.splitlines()):
        if words and not words[0].startswith("#") and hostname in words[1:]:
            return None
    base = existing if existing.strip() else _DEFAULT_HOSTS
    return base + ("" if base.endswith("\n") else "\n") + f"{HOST_NAME_ADDRESS}\t{hostname}\n"


def _place(path: str) -> str:
    """Where to write container path `path`: its directory resolved in the container (made if
    missing), never through the old root (the host's)."""
    parent = os.path.realpath(os.path.dirname(path))
    if parent == OLD_ROOT or parent.startswith(OLD_ROOT + "/"):
        raise OSError(0, f"{path} leads out of the container through a symbolic link")
    os.makedirs(parent, exist_ok=True)
    return os.path.join(parent, os.path.basename(path))


def _in_container(path: str) -> bool:
    real = os.path.realpath(path)
    return not (real == OLD_ROOT or real.startswith(OLD_ROOT + "/"))


def _current(path: str) -> bytes | None:
    """The content the container would read at `path`, None if none; never through the old root."""
    if not _in_container(path):
        return None
    try:
        fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _replace(path: str, data: bytes | None = None, link: str | None = None) -> None:
    target = _place(path)
    if os.path.isdir(target) and not os.path.islink(target):
        raise OSError(0, f"{path} is a directory in the container; expected a file")
    if os.path.lexists(target):
        os.unlink(target)
    if link is not None:
        os.symlink(link, target)
    elif data is not None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)  # whatever the launcher's umask: every user of the container reads it
            while data:
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)


def install(writes: tuple[Write, ...], hostname: str) -> None:
    """Write the files into the container's root (the current one). A file that already holds
    what it should is left alone: nothing is copied up into the overlay for it."""
    for w in writes:
        if w.data is None and w.link is None:
            if os.path.lexists(w.path):
                _replace(w.path)
        elif w.link is not None and _in_container(w.link) and os.path.isfile(w.link):
            if not (os.path.islink(w.path) and os.readlink(w.path) == w.link):
                _replace(w.path, link=w.link)
        elif _current(w.path) != w.data:
            _replace(w.path, w.data)
    current = _current(HOSTS)
    hosts = hosts_with((current or b"").decode(errors="replace"), hostname)
    if hosts is not None:
        _replace(HOSTS, hosts.encode())
