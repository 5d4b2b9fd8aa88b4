"""The pure pieces of `network: nat`: rtnetlink messages, the address pool, published ports and
the nftables text. The netlink messages are checked byte by byte against the layouts of
linux/netlink.h and linux/rtnetlink.h, and by the kernel itself in a namespace of the test's own."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest

from nspawn.backends.linux import addresses, nat, netlink as nl
from nspawn.config import ports
from tests.conftest import skip_unless_ci
from tests.linux.conftest import needs_root


def test_attributes_are_padded_and_nested():
    assert nl.attr(3, b"ab") == struct.pack("=HH", 6, 3) + b"ab\0\0"
    assert nl.string(3, "eth0") == struct.pack("=HH", 9, 3) + b"eth0\0" + b"\0\0\0"
    nested = nl.nest(18, nl.string(1, "veth"))
    size, kind = struct.unpack_from("=HH", nested)
    assert kind == 18 | nl.NLA_F_NESTED and size == 4 + 12
    assert nl.parse_attrs(nested) == {18: nl.string(1, "veth")}
    assert nl.parse_attrs(nl.parse_attrs(nested)[18]) == {1: b"veth\0"}


def test_message_header():
    raw = nl.new_bridge("nspawn0")
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", raw)
    assert (length, kind, seq, pid) == (len(raw), nl.RTM_NEWLINK, 0, 0)
    assert flags == nl.NLM_F_REQUEST | nl.NLM_F_CREATE | nl.NLM_F_EXCL | nl.NLM_F_ACK
    family, _, index, ifflags, change = struct.unpack_from("=BxHiII", raw, 16)
    assert (family, index, ifflags & nl.IFF_UP, change) == (0, 0, nl.IFF_UP, nl.IFF_UP)
    attrs = nl.parse_attrs(raw[32:])
    assert nl.name_of(attrs) == "nspawn0"
    assert nl.parse_attrs(attrs[nl.IFLA_LINKINFO]) == {nl.IFLA_INFO_KIND: b"bridge\0"}


def test_veth_peer_goes_to_a_namespace_by_pid_or_fd():
    for kw, key, value in ((dict(peer_pid=4242), nl.IFLA_NET_NS_PID, 4242), (dict(peer_fd=7), nl.IFLA_NET_NS_FD, 7)):
        raw = nl.new_veth("nsv1", "eth0", master=9, **kw)
        attrs = nl.parse_attrs(raw[32:])
        assert struct.unpack("=I", attrs[nl.IFLA_MASTER]) == (9,)
        info = nl.parse_attrs(attrs[nl.IFLA_LINKINFO])
        assert info[nl.IFLA_INFO_KIND] == b"veth\0"
        peer = nl.parse_attrs(info[nl.IFLA_INFO_DATA])[nl.VETH_INFO_PEER]
        peer_attrs = nl.parse_attrs(peer[16:])  # after the peer's own ifinfomsg
        assert nl.name_of(peer_attrs) == "eth0"
        assert struct.unpack("=I", peer_attrs[key]) == (value,)
    moved = nl.parse_attrs(nl.move_link(5, fd=3)[32:])
    assert struct.unpack("=I", moved[nl.IFLA_NET_NS_FD]) == (3,)


def test_address_route_and_port_isolation_messages():
    raw = nl.add_address(4, "10.213.0.2", 16)
    assert struct.unpack_from("=BBBBI", raw, 16) == (socket.AF_INET, 16, 0, 0, 4)
    assert nl.address_of(raw[16:]) == ("10.213.0.2", 16, 4)
    route = nl.add_default_route("10.213.0.1")
    attrs = nl.parse_attrs(route[16 + 12:])
    assert attrs[nl.RTA_GATEWAY] == socket.inet_aton("10.213.0.1")
    assert nl.route_of(route[16:]) == ("0.0.0.0", 0, nl.RT_TABLE_MAIN)
    iso = nl.isolate_port(7)
    assert struct.unpack_from("=BxHiII", iso, 16)[0] == nl.AF_BRIDGE
    assert nl.parse_attrs(nl.parse_attrs(iso[32:])[nl.IFLA_PROTINFO]) == {nl.IFLA_BRPORT_ISOLATED: b"\1"}


def test_parse_messages_splits_a_datagram():
    one = struct.pack("=IHHII", 20, nl.NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", -17)
    two = struct.pack("=IHHII", 16, nl.NLMSG_DONE, 0, 6, 0)
    assert nl.parse_messages(one + two) == [(nl.NLMSG_ERROR, 0, 5, struct.pack("=i", -17)), (nl.NLMSG_DONE, 0, 6, b"")]


def _as_root(test):
    for mark in needs_root:
        test = mark(test)
    return test


@_as_root
def test_the_kernel_takes_the_messages():
    """In a network namespace of a forked child's own: a bridge, a veth whose peer lands in
    another namespace (by pid), an isolated port, an address, a refusal with its errno."""
    from nspawn.backends.linux import libc

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc.unshare(libc.CLONE_NEWNET)
            with nl.Rtnl() as rtnl:
                rtnl.request(nl.new_bridge("br9"), "bridge")
                bridge = rtnl.link("br9")
                assert bridge[1] & nl.IFF_UP
                peer_r, peer_w = os.pipe()
                child = os.fork()
                if child == 0:
                    libc.unshare(libc.CLONE_NEWNET)
                    os.write(peer_w, b"x")
                    time.sleep(60)  # until killed: its namespace must outlive the veth's making
                    os._exit(0)
                os.read(peer_r, 1)
                rtnl.request(nl.new_veth("v9", "eth0", bridge[0], peer_pid=child), "veth")
                assert rtnl.link("eth0") is None  # only in the child's namespace
                rtnl.request(nl.isolate_port(rtnl.link("v9")[0]), "isolate")
                rtnl.request(nl.add_address(bridge[0], "10.9.0.1", 24), "address")
                assert ("10.9.0.1", 24, bridge[0]) in rtnl.addresses()
                assert ("10.9.0.0", 24, nl.RT_TABLE_MAIN) in rtnl.routes()
                try:
                    rtnl.request(nl.new_bridge("br9"), "bridge again")
                except nl.NetlinkError as e:
                    assert e.errno == 17 and str(e).startswith("netlink bridge again: File exists")
                else:
                    raise AssertionError("a second bridge of the same name")
                assert rtnl.delete_link("v9") and not rtnl.delete_link("v9")
                os.kill(child, 9)
            os.write(w, b"ok")
        except BaseException as e:
            os.write(w, repr(e).encode())
        os._exit(0)
    os.close(w)
    answer = os.read(r, 1000).decode()
    os.waitpid(pid, 0)
    assert answer == "ok"


def test_subnet_choice_avoids_the_hosts_routes():
    assert addresses.choose_subnet([("0.0.0.0", 0), ("192.0.2.0", 24)]) == "10.213.0.0/16"
    assert addresses.choose_subnet([("10.0.0.0", 8)]) == "172.30.128.0/17"
    assert addresses.choose_subnet([("10.213.5.0", 24), ("10.214.0.0", 16)]) == "10.215.0.0/16"
    assert addresses.choose_subnet([("10.0.0.0", 8)], "192.168.77.0/24") == "192.168.77.0/24"
    with pytest.raises(ValueError, match="host bits"):
        addresses.choose_subnet([], "10.0.0.1/24")
    with pytest.raises(ValueError, match="prefix length"):
        addresses.parse_subnet("10.0.0.0/30")
    with pytest.raises(ValueError, match="overlaps a route"):
        addresses.choose_subnet([("10.0.0.0", 8), ("172.16.0.0", 12)])


def test_hosts_skip_network_bridge_and_broadcast():
    assert addresses.gateway("10.1.2.0/24") == "10.1.2.1"
    found = list(addresses.hosts("10.1.2.0/29"))
    assert found == ["10.1.2.2", "10.1.2.3", "10.1.2.4", "10.1.2.5", "10.1.2.6"]


def test_pool_leases_distinct_addresses_to_concurrent_callers(tmp_path):
    """Threads each with a Pool of their own (its own descriptor, so its own flock)."""
    got, errors = [], []

    def take(i):
        try:
            with addresses.Pool(str(tmp_path)) as pool:
                got.append(pool.lease("10.5.0.0/24", f"c{i}"))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(got)) == 40
    with addresses.Pool(str(tmp_path)) as pool:
        held = pool.held()
        assert held[got[0]].startswith("c") and len(held) == 40
        assert pool.release("c0") == [a for a, c in held.items() if c == "c0"]
        assert pool.release("c0") == []
        assert pool.release("c1", "10.5.0.250") == []  # not its lease: untouched
        assert pool.lease("10.5.0.0/24", "new") == [a for a, c in held.items() if c == "c0"][0]


def test_pool_runs_out(tmp_path):
    with addresses.Pool(str(tmp_path)) as pool:
        for i in range(5):
            pool.lease("10.5.0.0/29", str(i))
        with pytest.raises(OSError, match="every address of 10.5.0.0/29 is leased"):
            pool.lease("10.5.0.0/29", "six")


def test_port_claims_conflict_on_overlapping_addresses(tmp_path):
    with addresses.Pool(str(tmp_path)) as pool:
        assert pool.claim_ports(["tcp-any-80", "udp-127.0.0.1-53"], "a") is None
        assert pool.claim_ports(["tcp-10.0.0.1-80"], "b") == ("80/tcp", "a")
        assert pool.claim_ports(["udp-any-53"], "b") == ("53/udp", "a")
        assert pool.claim_ports(["udp-10.0.0.1-53", "tcp-any-81"], "b") is None
        pool.release_ports(["tcp-any-80"], "b")  # not b's
        assert pool.claimed()["tcp-any-80"] == "a"
        pool.release_ports(["tcp-any-80", "udp-127.0.0.1-53"], "a")
        assert sorted(pool.claimed()) == ["tcp-any-81", "udp-10.0.0.1-53"]


def test_port_parsing():
    assert ports.parse("8080:80") == ports.PortMapping("", 8080, 80, "tcp")
    assert ports.parse("127.0.0.1:5353:53/udp") == ports.PortMapping("127.0.0.1", 5353, 53, "udp")
    assert ports.parse("0.0.0.0:1:2/tcp").host_ip == ""
    assert ports.parse("127.0.0.1:5353:53/udp").text() == "127.0.0.1:5353:53/udp"
    for bad, why in (("80", "expected"), ("0:80", "out of range"), ("70000:80", "out of range"),
                     ("1.2.3.456:80:80", "not an IPv4"), ("80:80/sctp", "expected")):
        with pytest.raises(ValueError, match=why):
            ports.parse(bad)
    parsed = [ports.parse(t) for t in ("80:1", "127.0.0.1:80:2", "80:3/udp", "10.0.0.1:81:1", "10.0.0.2:81:1")]
    assert ports.conflicts(parsed) == [(0, 1)]


def test_nft_text_loads_in_a_dry_run():
    """libnftables parses and checks the table and port rules without touching the kernel."""
    from nspawn.backends.linux.nftables import Nft, NftError, available

    if available() is not None:
        skip_unless_ci(available())
    mappings = (ports.parse("8080:80"), ports.parse("127.0.0.1:5353:53/udp"))
    text = nat.table_text("10.213.0.0/16") + nat.port_rules(mappings, "10.213.0.2", "nspawn-x")
    assert text.count("dnat to 10.213.0.2:80") == 2 and 'ip daddr 127.0.0.1 fib daddr type local udp dport 5353' in text
    with Nft(dry_run=True) as nft:
        nft.run(text)
        with pytest.raises(NftError, match="nft_run_cmd_from_buffer: Error: syntax error"):
            nft.run("add rule ip nspawn forward oops")


def test_link_names_fit_ifnamsiz():
    names = {nat.link_name() for _ in range(100)}
    assert len(names) == 100 and all(len(n) <= 15 for n in names)


def test_conflicts_name_docker_s_drop_policy_and_libvirt_s_chains():
    ruleset = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "drop"}},
        {"chain": {"family": "ip", "table": "filter", "name": "LIBVIRT_FWO"}},
        {"chain": {"family": "ip", "table": "nspawn", "name": "forward", "hook": "forward", "policy": "drop"}},
        {"chain": {"family": "inet", "table": "other", "name": "fw", "hook": "forward", "policy": "accept"}},
    ]}
    found = nat.conflicts(ruleset)
    assert len(found) == 2
    assert found[0].startswith("table ip filter chain FORWARD drops forwarded packets") and "DOCKER-USER" in found[0]
    assert "LIBVIRT_FWO" in found[1]
    assert nat.conflicts({"nftables": []}) == []
