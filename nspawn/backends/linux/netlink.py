"""rtnetlink (NETLINK_ROUTE) through the standard library's sockets: the links, addresses and
routes `network: nat` needs, without `ip` (a process per step) or pyroute2 (whose import alone
costs several launches). IPv4 only.

The message builders are pure (bytes in, bytes out) and tested as such; `Rtnl` sends them
and turns the kernel's error answers into NetlinkError naming the request.
"""

from __future__ import annotations

import errno
import os
import struct

# The C module under `socket`: socket.py builds enums of every constant on import, which would
# cost a nat run more than all of its netlink requests.
import _socket as socket

NETLINK_ROUTE = 0

# linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000

# linux/rtnetlink.h
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15

# linux/if_link.h, linux/if_addr.h, linux/veth.h
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_PROTINFO, IFLA_LINKINFO = 1, 3, 10, 12, 18
IFLA_NET_NS_PID, IFLA_NET_NS_FD = 19, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BRPORT_ISOLATED = 33
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1

AF_UNSPEC, AF_INET, AF_BRIDGE = 0, 2, 7

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_ATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")


class NetlinkError(OSError):
    """The kernel refused a request: `call` names it (what and on which link), errno the reason."""

    def __init__(self, call: str, err: int):
        super().__init__(err, os.strerror(err))
        self.call = call

    def __str__(self) -> str:
        return f"netlink {self.call}: {self.strerror} ({errno.errorcode.get(self.errno, self.errno)})"


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to four bytes."""
    size = _ATTR.size + len(payload)
    return (_ATTR.pack(size, kind) + payload).ljust(_align(size), b"\0")


def nest(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def string(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def ipv4(kind: int, address: str) -> bytes:
    return attr(kind, socket.inet_aton(address))


def message(kind: int, flags: int, body: bytes, seq: int = 0) -> bytes:
    return _HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def ifinfo(family: int = AF_UNSPEC, index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(family, 0, index, flags, change)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """rtattrs by type (the nested flag cleared); the last wins."""
    found, at = {}, 0
    while at + _ATTR.size <= len(data):
        size, kind = _ATTR.unpack_from(data, at)
        if size < _ATTR.size:
            break
        found[kind & ~NLA_F_NESTED] = data[at + _ATTR.size:at + size]
        at += _align(size)
    return found


def parse_messages(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each message in one datagram."""
    out, at = [], 0
    while at + _HEADER.size <= len(data):
        size, kind, flags, seq, _ = _HEADER.unpack_from(data, at)
        if size < _HEADER.size:
            break
        out.append((kind, flags, seq, data[at + _HEADER.size:at + size]))
        at += _align(size)
    return out


# The requests nspawn makes, pure.

def new_bridge(name: str) -> bytes:
    """A bridge, up: NLM_F_EXCL, so that a bridge someone else made is never taken for ours."""
    body = ifinfo(flags=IFF_UP, change=IFF_UP) + string(IFLA_IFNAME, name) + nest(IFLA_LINKINFO, string(IFLA_INFO_KIND, "bridge"))
    return message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, body)


def new_veth(name: str, peer: str, master: int = 0, peer_pid: int = 0, peer_fd: int = -1) -> bytes:
    """A veth pair: `name` here, up (a port of bridge `master` when given), `peer` down in the
    network namespace of process `peer_pid` or namespace descriptor `peer_fd` when given (the
    kernel refuses to bring it up before its other end exists: ENOTCONN). One request: the peer
    never exists in this namespace under a name another run could take."""
    peer_attrs = string(IFLA_IFNAME, peer)
    if peer_pid:
        peer_attrs += u32(IFLA_NET_NS_PID, peer_pid)
    elif peer_fd >= 0:
        peer_attrs += u32(IFLA_NET_NS_FD, peer_fd)
    info = nest(IFLA_INFO_DATA, nest(VETH_INFO_PEER, ifinfo() + peer_attrs))
    body = ifinfo(flags=IFF_UP, change=IFF_UP) + string(IFLA_IFNAME, name)
    if master:
        body += u32(IFLA_MASTER, master)
    body += nest(IFLA_LINKINFO, string(IFLA_INFO_KIND, "veth"), info)
    return message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, body)


def move_link(index: int, pid: int = 0, fd: int = -1) -> bytes:
    """Link `index` into the network namespace of process `pid`, or of namespace descriptor `fd`."""
    target = u32(IFLA_NET_NS_PID, pid) if pid else u32(IFLA_NET_NS_FD, fd)
    return message(RTM_NEWLINK, NLM_F_ACK, ifinfo(index=index) + target)


def isolate_port(index: int) -> bytes:
    """Bridge port `index` isolated: it forwards to non-isolated ports only (the bridge itself,
    the host), never to another isolated port, so containers on one bridge cannot reach each
    other even at layer 2, where the host's forward rules never see the frames."""
    body = ifinfo(family=AF_BRIDGE, index=index) + nest(IFLA_PROTINFO, attr(IFLA_BRPORT_ISOLATED, b"\1"))
    return message(RTM_SETLINK, NLM_F_ACK, body)


def set_up(index: int) -> bytes:
    return message(RTM_NEWLINK, NLM_F_ACK, ifinfo(index=index, flags=IFF_UP, change=IFF_UP))


def get_link(name: str) -> bytes:
    return message(RTM_GETLINK, 0, ifinfo() + string(IFLA_IFNAME, name))


def del_link(name: str) -> bytes:
    return message(RTM_DELLINK, NLM_F_ACK, ifinfo() + string(IFLA_IFNAME, name))


def add_address(index: int, address: str, prefix: int) -> bytes:
    body = _IFADDR.pack(AF_INET, prefix, 0, RT_SCOPE_UNIVERSE, index) + ipv4(IFA_LOCAL, address) + ipv4(IFA_ADDRESS, address)
    return message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, body)


def dump_addresses() -> bytes:
    return message(RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(AF_INET, 0, 0, 0, 0))


def add_default_route(gateway: str) -> bytes:
    body = _RTMSG.pack(AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    return message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, body + ipv4(RTA_GATEWAY, gateway))


def dump_routes() -> bytes:
    return message(RTM_GETROUTE, NLM_F_DUMP, _RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0))


def link_of(payload: bytes) -> tuple[int, int, dict[int, bytes]]:
    """(index, flags, attributes) of an RTM_NEWLINK answer."""
    _, _, index, flags, _ = _IFINFO.unpack_from(payload)
    return index, flags, parse_attrs(payload[_IFINFO.size:])


def route_of(payload: bytes) -> tuple[str, int, int]:
    """(destination, prefix length, table) of an RTM_NEWROUTE answer; 0.0.0.0/0 is the default."""
    family, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(payload)
    attrs = parse_attrs(payload[_RTMSG.size:])
    dst = socket.inet_ntoa(attrs[RTA_DST]) if RTA_DST in attrs else "0.0.0.0"
    if RTA_TABLE in attrs:
        table = struct.unpack("=I", attrs[RTA_TABLE])[0]
    return dst, dst_len, table


def address_of(payload: bytes) -> tuple[str, int, int]:
    """(address, prefix length, link index) of an RTM_NEWADDR answer."""
    _, prefix, _, _, index = _IFADDR.unpack_from(payload)
    attrs = parse_attrs(payload[_IFADDR.size:])
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS) or b"\0\0\0\0"
    return socket.inet_ntoa(raw), prefix, index


def name_of(attrs: dict[int, bytes]) -> str:
    return attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode()


class Rtnl:
    """One NETLINK_ROUTE socket, in the network namespace of the thread that opened it (a
    socket stays in its namespace whatever the thread does afterwards)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, raw: bytes, call: str) -> list[bytes]:
        """Send one request (its seq filled in here) and read its answer: the payloads of a
        dump or a get, nothing for an acknowledged change. A refusal raises NetlinkError."""
        self._seq += 1
        seq = self._seq
        self.sock.send(raw[:8] + struct.pack("=I", seq) + raw[12:])
        dump = struct.unpack_from("=H", raw, 6)[0] & NLM_F_DUMP == NLM_F_DUMP
        out = []
        while True:
            data = self.sock.recv(65536)
            for kind, flags, got, payload in parse_messages(data):
                if got != seq:
                    continue  # an answer to an earlier request that was given up on
                if kind == NLMSG_ERROR:
                    code = -_ERRNO.unpack_from(payload)[0]
                    if code:
                        raise NetlinkError(call, code)
                    return out
                if kind == NLMSG_DONE:
                    return out
                out.append(payload)
                if not dump and not flags & NLM_F_MULTI:
                    return out

    def link(self, name: str) -> tuple[int, int] | None:
        """(index, flags) of the link named `name`, None when there is none."""
        try:
            answer = self.request(get_link(name), f"get link {name}")
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        index, flags, _ = link_of(answer[0])
        return index, flags

    def delete_link(self, name: str) -> bool:
        """Whether it was there to delete."""
        try:
            self.request(del_link(name), f"delete link {name}")
            return True
        except NetlinkError as e:
            if e.errno == errno.ENODEV:
                return False
            raise

    def routes(self) -> list[tuple[str, int, int]]:
        return [route_of(p) for p in self.request(dump_routes(), "list routes")]

    def addresses(self) -> list[tuple[str, int, int]]:
        return [address_of(p) for p in self.request(dump_addresses(), "list addresses")]
