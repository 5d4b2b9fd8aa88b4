"""The NAT network's addresses, kept in the state directory: which subnet the nspawn bridge has,
and which container holds each address. Concurrent launchers (a batch, several CI jobs) share
it under one flock; each allocation is a lease file named by its address, holding the container
id, so a releaser needs only the journal's data and `ps`/`cleanup` can see who holds what.

    <state>/nat/lock          flock: choosing the subnet, leasing, and making or removing the
                              shared bridge and table happen under it
    <state>/nat/subnet        "10.213.0.0/16": chosen once, by the first launcher
    <state>/nat/leases/<ip>   the container id holding <ip>
    <state>/nat/ports/<claim> the container id publishing a host port: <proto>-<ip or any>-<port>

IPv4 arithmetic on integers: the ipaddress module costs a launch more than all of this.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

import _socket as socket  # not socket.py, whose enums cost a launch (netlink.py)

# Tried in order when NSPAWN_NAT_SUBNET does not choose: private /16s that Docker (172.17+/16,
# 192.168/20 pools), podman (10.88/16, 10.89+/24), libvirt (192.168.122/24) and most home and
# cloud networks leave alone. One that overlaps a route of the host is skipped.
CANDIDATES = ("10.213.0.0/16", "10.214.0.0/16", "10.215.0.0/16", "10.216.0.0/16", "172.30.128.0/17")
SUBNET_ENV = "NSPAWN_NAT_SUBNET"
_LARGEST_PREFIX = 29  # a bridge, at least one container, network and broadcast


def to_int(address: str) -> int:
    return struct.unpack("!I", socket.inet_aton(address))[0]


def to_text(value: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", value))


def parse_subnet(text: str) -> tuple[int, int]:
    """(network as an integer, prefix length) of "a.b.c.d/n"; ValueError naming what is wrong."""
    address, slash, prefix = text.partition("/")
    try:
        if not slash or not prefix.isdigit() or address.count(".") != 3:
            raise OSError
        network, length = to_int(address), int(prefix)
    except OSError:
        raise ValueError(f"{text!r} is not an IPv4 subnet such as 10.213.0.0/16") from None
    if not 8 <= length <= _LARGEST_PREFIX:
        raise ValueError(f"{text!r}: expected a prefix length from /8 to /{_LARGEST_PREFIX}")
    mask = (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    if network & ~mask & 0xFFFFFFFF:
        raise ValueError(f"{text!r} has host bits set; expected {to_text(network & mask)}/{length}")
    return network, length


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    shorter = min(a[1], b[1])
    mask = (0xFFFFFFFF << (32 - shorter)) & 0xFFFFFFFF if shorter else 0
    return a[0] & mask == b[0] & mask


def choose_subnet(routes: list[tuple[str, int]], wanted: str | None = None) -> str:
    """The subnet for a new bridge: `wanted` (NSPAWN_NAT_SUBNET) as it is, else the first
    candidate that no route of the host overlaps (the default route, 0.0.0.0/0, is not one)."""
    if wanted:
        parse_subnet(wanted)
        return wanted
    taken = [(to_int(dst), length) for dst, length in routes if length > 0]
    for candidate in CANDIDATES:
        if not any(overlaps(parse_subnet(candidate), route) for route in taken):
            return candidate
    raise ValueError("every candidate subnet (" + ", ".join(CANDIDATES) + f") overlaps a route of this host; set {SUBNET_ENV}")


def gateway(subnet: str) -> str:
    """The bridge's own address: the subnet's first."""
    return to_text(parse_subnet(subnet)[0] + 1)


def hosts(subnet: str):
    """The containers' addresses, in order: after the bridge's, before the broadcast address."""
    network, length = parse_subnet(subnet)
    last = network + (1 << (32 - length)) - 1
    return (to_text(n) for n in range(network + 2, last))


class Pool:
    """The state directory's NAT records. Use `with pool:` (the flock) around every change."""

    def __init__(self, state: str):
        self.directory = os.path.join(state, "nat")
        self.leases = os.path.join(self.directory, "leases")
        self.ports = os.path.join(self.directory, "ports")
        self._fd = -1

    def __enter__(self) -> Pool:
        os.makedirs(self.leases, mode=0o700, exist_ok=True)
        os.makedirs(self.ports, mode=0o700, exist_ok=True)
        self._fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)  # the flock goes with it
        self._fd = -1

    def subnet(self) -> str | None:
        try:
            with open(os.path.join(self.directory, "subnet")) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def set_subnet(self, subnet: str | None) -> None:
        path = os.path.join(self.directory, "subnet")
        if subnet is None:
            _unlink(path)
            return
        with open(path + ".new", "w") as f:
            f.write(subnet + "\n")
        os.replace(path + ".new", path)

    def held(self) -> dict[str, str]:
        """{address: container id} of every lease."""
        out = {}
        for name in os.listdir(self.leases):
            try:
                with open(os.path.join(self.leases, name)) as f:
                    out[name] = f.read().strip()
            except FileNotFoundError:
                pass
        return out

    def lease(self, subnet: str, container_id: str) -> str:
        """The first free address, now held by `container_id`."""
        held = set(os.listdir(self.leases))
        for address in hosts(subnet):
            if address in held:
                continue
            try:
                fd = os.open(os.path.join(self.leases, address), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:  # a launcher that did not take the lock: never two holders
                continue
            try:
                os.write(fd, container_id.encode() + b"\n")
            finally:
                os.close(fd)
            return address
        raise OSError(errno.EADDRNOTAVAIL, f"every address of {subnet} is leased ({len(held)} containers)")

    def release(self, container_id: str, address: str | None = None) -> list[str]:
        """Drop the container's leases (the one at `address`, or any it holds); those dropped."""
        names = [address] if address else os.listdir(self.leases)
        dropped = []
        for name in names:
            path = os.path.join(self.leases, name)
            try:
                with open(path) as f:
                    if f.read().strip() != container_id:
                        continue  # released already, and leased again to another
            except FileNotFoundError:
                continue
            os.unlink(path)
            dropped.append(name)
        return dropped

    def claim_ports(self, claims: list[str], container_id: str) -> tuple[str, str] | None:
        """Claim every host port, or none: (the port, its holder) of the first already
        published, where "any" address overlaps each one."""
        held = {}
        for name in os.listdir(self.ports):
            protocol, _, rest = name.partition("-")
            ip, _, port = rest.rpartition("-")
            held.setdefault((protocol, port), []).append((ip, name))
        for claim in claims:
            protocol, _, rest = claim.partition("-")
            ip, _, port = rest.rpartition("-")
            for other, name in held.get((protocol, port), ()):
                if "any" in (ip, other) or ip == other:
                    return f"{port}/{protocol}", _read(os.path.join(self.ports, name))
        for claim in claims:
            with open(os.path.join(self.ports, claim), "x") as f:
                f.write(container_id + "\n")
        return None

    def release_ports(self, claims, container_id: str) -> None:
        for claim in claims:
            path = os.path.join(self.ports, claim)
            try:
                if _read(path) == container_id:
                    os.unlink(path)
            except FileNotFoundError:
                pass

    def claimed(self) -> dict[str, str]:
        return {name: _read(os.path.join(self.ports, name)) for name in os.listdir(self.ports)}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
