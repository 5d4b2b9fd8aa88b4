"""Published ports, `[IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]` as Docker's -p writes them: parsed
once here for the config's `ports`, the Linux backend's DNAT rules and HCS's port mappings."""

from __future__ import annotations

import re

from nspawn.config.fields import PORT_PATTERN
from nspawn.records import record


@record
class PortMapping:
    host_ip: str  # "" for every address of the host
    host_port: int
    container_port: int
    protocol: str

    def text(self) -> str:
        return f"{self.host_ip + ':' if self.host_ip else ''}{self.host_port}:{self.container_port}/{self.protocol}"


def parse(text: str) -> PortMapping:
    """The mapping `text` says; ValueError saying what was expected."""
    if not re.match(PORT_PATTERN, text):
        raise ValueError("expected [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp], such as 8080:80 or 127.0.0.1:5353:53/udp")
    text, _, protocol = text.partition("/")
    *ip, host, container = text.split(":")
    host_ip = ip[0] if ip else ""
    if host_ip and any(int(part) > 255 for part in host_ip.split(".")):
        raise ValueError(f"{host_ip} is not an IPv4 address; expected four numbers from 0 to 255")
    if host_ip == "0.0.0.0":
        host_ip = ""
    for port in (host, container):
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {int(port)} is out of range; expected 1 to 65535")
    return PortMapping(host_ip, int(host), int(container), protocol or "tcp")


def conflicts(mappings: list[PortMapping]) -> list[tuple[int, int]]:
    """(i, j) pairs, i < j, of mappings that claim the same host port and protocol on an
    overlapping address (every address overlaps each one)."""
    found = []
    for j, b in enumerate(mappings):
        for i, a in enumerate(mappings[:j]):
            if (a.host_port, a.protocol) == (b.host_port, b.protocol) and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip):
                found.append((i, j))
                break
    return found
