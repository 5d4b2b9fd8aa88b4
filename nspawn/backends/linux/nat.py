"""`network: nat` on Linux: the container's own network namespace, joined to the host by a veth
pair whose host end is a port of the nspawn bridge, an address leased from the state
directory's pool, a default route through the bridge, and nftables rules (one table of
nspawn's own) that masquerade the subnet, keep containers from each other and from the host's
services, and send published ports to their containers.

    host:       nspawn0 (bridge, <subnet>.1, route_localnet) ── nsv<random> (port, isolated)
    container:                                                   eth0 (<leased address>)

What is shared (the bridge, the table, the chosen subnet) is made by the first container, under
the pool's lock, and stays while unused: making and unmaking a bridge costs tens of
milliseconds, a launch's whole budget. `nspawn cleanup` removes them once no lease is held
(`tidy`). What is a container's own is journaled before it is made, and released:

    nat-lease  its address (a lease file)          released by `release_lease`
    nat-ports  its published ports' DNAT rules     released by `release_ports`
    nat-link   its veth pair                       released by `release_link`; the kernel
               removes it itself with the container's network namespace

Isolation: the veth ports are isolated bridge ports (IFLA_BRPORT_ISOLATED), which never
forward to each other, so containers on the bridge do not reach each other; the input chain
drops what the bridge brings to the host but replies and published ports, so the host's own
services are out of a container's reach. A container reaches another's published port through
the host's address, as from anywhere else.
"""

from __future__ import annotations

import errno
import os

from nspawn.backends import contract
from nspawn.backends.linux import addresses, netlink
from nspawn.errors import LaunchError
from nspawn.journal import state_dir
from nspawn.records import record

BRIDGE = "nspawn0"
TABLE = "nspawn"  # family ip
PEER = "eth0"  # the container's end
FORWARDING = "/proc/sys/net/ipv4/ip_forward"


@record
class Lease:
    address: str
    subnet: str
    bridge: int  # its index, as found while the lease was taken

    @property
    def prefix(self) -> int:
        return int(self.subnet.partition("/")[2])


def link_name() -> str:
    """A host end's name, within IFNAMSIZ (15): random, as the journal keeps it for the releaser,
    and 48 bits make two live containers' alike unlikely enough (the kernel refuses the second)."""
    return f"nsv{os.urandom(6).hex()}"


def table_text(subnet: str, bridge: str = BRIDGE) -> str:
    """The nft commands that (re)make nspawn's table, as one transaction. Only traffic to or from
    the bridge is judged here; the host's other traffic passes these chains untouched."""
    b = f'"{bridge}"'
    return f"""add table ip {TABLE}
delete table ip {TABLE}
table ip {TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != {b} masquerade
        ip saddr 127.0.0.0/8 oifname {b} masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        oifname {b} ct state established,related accept
        oifname {b} ct status dnat accept
        oifname {b} drop
        iifname {b} ip saddr {subnet} accept
        iifname {b} drop
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname {b} ct state established,related accept
        iifname {b} drop
    }}
}}
"""


def port_rules(ports: tuple, address: str, tag: str) -> str:
    """DNAT of each published port to the container, for packets arriving (prerouting) and for
    the host's own connections (output: `curl 127.0.0.1:8080`); each rule carries `tag` (the
    container id), by which its releaser finds it."""
    lines = []
    for p in ports:
        match = (f"ip daddr {p.host_ip} " if p.host_ip else "") + f"fib daddr type local {p.protocol} dport {p.host_port}"
        for chain in ("prerouting", "output"):
            lines.append(f'add rule ip {TABLE} {chain} {match} dnat to {address}:{p.container_port} comment "{tag}"')
    return "\n".join(lines) + "\n"


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _bridge_subnet(rtnl: netlink.Rtnl, index: int) -> str | None:
    """The subnet of an existing nspawn bridge's address (one made with another state directory)."""
    for address, prefix, link in rtnl.addresses():
        if link == index:
            mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
            return f"{addresses.to_text(addresses.to_int(address) & mask)}/{prefix}"
    return None


def _ensure_network(pool: addresses.Pool, note) -> tuple[str, int]:
    """(subnet, index) of the bridge, which exists with its table when this returns (under the lock)."""
    subnet = pool.subnet()
    with netlink.Rtnl() as rtnl:
        found = rtnl.link(BRIDGE)
        if found and subnet:
            return subnet, found[0]
        if found:
            subnet = _bridge_subnet(rtnl, found[0])
        subnet = subnet or addresses.choose_subnet([(d, n) for d, n, table in rtnl.routes() if table == netlink.RT_TABLE_MAIN],
                                                   os.environ.get(addresses.SUBNET_ENV))
        pool.set_subnet(subnet)  # first: `tidy` removes what it names
        if not found:
            try:
                rtnl.request(netlink.new_bridge(BRIDGE), f"create bridge {BRIDGE}")
            except netlink.NetlinkError as e:
                if e.errno != errno.EEXIST:  # made meanwhile by a launcher with another state directory
                    raise
            found = rtnl.link(BRIDGE)
        try:
            rtnl.request(netlink.add_address(found[0], addresses.gateway(subnet), int(subnet.partition("/")[2])),
                         f"address {BRIDGE}")
        except netlink.NetlinkError as e:
            if e.errno != errno.EEXIST:
                raise
    # Lets the host's own connections to 127.0.0.1:<published port>, DNAT'd to a container,
    # leave through the bridge (they are masqueraded to the bridge's address on the way).
    _write(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet", "1")
    from nspawn.backends.linux.nftables import Nft

    with Nft() as nft:
        nft.run(table_text(subnet))
    note(f"made the bridge {BRIDGE} ({subnet}) and the nftables table ip {TABLE}; `nspawn cleanup` removes them when no container uses them")
    return subnet, found[0]


def forwarding_off() -> bool:
    return _read(FORWARDING) == "0"


def prepare(session, ports: tuple) -> Lease:
    """Before the container exists: its address leased (and the shared network made if need be),
    IP forwarding on, its published ports' rules in place."""
    journal, container = session.journal, session.container_id

    def note(text: str) -> None:
        session.listener(contract.NOTE, {"message": text})

    pool = addresses.Pool(state_dir())
    entry = journal.record("nat-lease", what=container, state=pool.directory, container=container)
    try:
        with pool:
            subnet, bridge = _ensure_network(pool, note)
            address = pool.lease(subnet, container)
        journal.update(entry, what=address, address=address)
        if forwarding_off():
            _write(FORWARDING, "1")
            note("turned IP forwarding on (net.ipv4.ip_forward=1): NAT needs it, and it stays on")
        if ports:
            _publish(journal, pool, container, address, ports)
    except (OSError, ValueError) as e:
        raise LaunchError(f"the NAT network cannot be set up: {e}") from None
    return Lease(address, subnet, bridge)


def _publish(journal, pool, container: str, address: str, ports: tuple) -> None:
    claims = [f"{p.protocol}-{p.host_ip or 'any'}-{p.host_port}" for p in ports]
    journal.record("nat-ports", what=", ".join(p.text() for p in ports), state=pool.directory,
                   container=container, claims=claims)
    with pool:
        taken = pool.claim_ports(claims, container)
    if taken:
        raise LaunchError(f"port {taken[0]} is already published by container {taken[1]}")
    from nspawn.backends.linux.nftables import Nft

    with Nft() as nft:
        nft.run(port_rules(ports, address, container))


def attach(session, lease: Lease, init_pid: int, init_start: int | None) -> None:
    """Once the container's init exists (in its own network namespace): the veth pair, the
    container's end configured from inside its namespace."""
    from nspawn.backends.linux import libc

    name = link_name()
    session.journal.record("nat-link", what=name, name=name, pid=init_pid, start=init_start)
    try:
        with netlink.Rtnl() as rtnl:
            rtnl.request(netlink.new_veth(name, PEER, lease.bridge, peer_pid=init_pid), f"create veth {name}")
            rtnl.request(netlink.isolate_port(rtnl.link(name)[0]), f"isolate bridge port {name}")
        inside = _socket_in(f"/proc/{init_pid}/ns/net", libc)
        with inside:
            index = inside.link(PEER)[0]
            inside.request(netlink.add_address(index, lease.address, lease.prefix), f"address {PEER} in the container")
            inside.request(netlink.set_up(index), f"bring {PEER} up in the container")
            inside.request(netlink.add_default_route(addresses.gateway(lease.subnet)), "default route in the container")
    except OSError as e:
        raise LaunchError(f"the container's network cannot be set up: {e}") from None


def _socket_in(namespace: str, libc) -> netlink.Rtnl:
    """A netlink socket in another network namespace: this thread steps in to open it and back
    out (a socket keeps the namespace it was made in)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
        try:
            libc.setns(target, libc.CLONE_NEWNET)
            try:
                return netlink.Rtnl()
            finally:
                libc.setns(own, libc.CLONE_NEWNET)
        finally:
            os.close(target)
    finally:
        os.close(own)


# Releasers (release.py), from journal data alone.

def release_link(data: dict) -> None:
    """The veth pair, unless the kernel is removing it already: once the container's processes
    are gone its network namespace goes, and the pair with it. Deleting it ourselves waits for
    the kernel's RCU grace periods (about 20 ms), so it is done only while the container lives."""
    from nspawn.backends.linux.release import start_time

    pid, start = data.get("pid"), data.get("start")
    if pid and start is not None and start_time(pid) != start:
        return
    with netlink.Rtnl() as rtnl:
        rtnl.delete_link(data["name"])


def release_lease(data: dict) -> None:
    with addresses.Pool(os.path.dirname(data["state"])) as pool:
        pool.release(data["container"], data.get("address"))


def release_ports(data: dict) -> None:
    """The container's DNAT rules (found by their comment, its id) and its port claims."""
    from nspawn.backends.linux.nftables import Nft, NftError

    with Nft(json_output=True) as nft:
        try:
            listing = nft.run_json({"nftables": [{"list": {"table": {"family": "ip", "name": TABLE}}}]})
        except NftError as e:
            if "No such file" not in str(e):
                raise
            listing = None
        handles = [(r["chain"], r["handle"]) for item in (listing or {}).get("nftables", ())
                   if (r := item.get("rule")) and r.get("comment") == data["container"]]
        if handles:
            nft.run("".join(f"delete rule ip {TABLE} {chain} handle {handle}\n" for chain, handle in handles))
    with addresses.Pool(os.path.dirname(data["state"])) as pool:
        pool.release_ports(data.get("claims", ()), data["container"])


def tidy() -> list[str]:
    """`nspawn cleanup`: the bridge, the table and the subnet's record, when no lease is held."""
    pool = addresses.Pool(state_dir())
    if not os.path.isdir(pool.directory):
        return []
    removed = []
    with pool:
        if pool.held():
            return []
        with netlink.Rtnl() as rtnl:
            if rtnl.delete_link(BRIDGE):
                removed.append(f"bridge {BRIDGE}")
        from nspawn.backends.linux.nftables import Nft, available

        if available() is None:
            with Nft() as nft:
                if f"table ip {TABLE}" in nft.run("list tables ip"):
                    nft.run(f"delete table ip {TABLE}")
                    removed.append(f"nftables table ip {TABLE}")
        if pool.subnet():
            pool.set_subnet(None)
    return removed


def conflicts(ruleset: dict) -> list[str]:
    """What in another table's rules (nft's JSON listing) would undo nspawn's: a forward hook
    whose policy drops (Docker's iptables FORWARD policy) or libvirt's and Docker's chains."""
    found = []
    for item in ruleset.get("nftables", ()):
        chain = item.get("chain")
        if not chain or chain.get("table") == TABLE:
            continue
        where = f"table {chain.get('family')} {chain.get('table')} chain {chain.get('name')}"
        if chain.get("hook") == "forward" and chain.get("policy") == "drop":
            docker = " (Docker sets it; allow nspawn0 in DOCKER-USER: iptables -I DOCKER-USER -i nspawn0 -j ACCEPT and -o nspawn0 -j ACCEPT)"
            found.append(f"{where} drops forwarded packets by default, nat containers' among them" + docker)
        elif chain.get("name", "").startswith(("LIBVIRT_FW", "DOCKER-ISOLATION")) or chain.get("table") == "libvirt_network":
            found.append(f"{where} (libvirt's or Docker's) judges forwarded packets too; it rejects only its own bridges' traffic, check it leaves nspawn0's alone")
    return found


def doctor() -> list[tuple[str, bool, str]]:
    """The `doctor` lines for network nat: forwarding, the bridge, nftables, other firewalls."""
    from nspawn.backends.linux.nftables import Nft, NftError, available

    checks = []
    off = forwarding_off()
    checks.append(("nat: IP forwarding", True, "off: a nat run turns it on (net.ipv4.ip_forward=1) and says so" if off else "on"))
    pool = addresses.Pool(state_dir())
    bridge = None
    try:
        with netlink.Rtnl() as rtnl:
            bridge = rtnl.link(BRIDGE)
            subnet = pool.subnet() if bridge else addresses.choose_subnet(
                [(d, n) for d, n, table in rtnl.routes() if table == netlink.RT_TABLE_MAIN], os.environ.get(addresses.SUBNET_ENV))
        held = len(os.listdir(pool.leases)) if os.path.isdir(pool.leases) else 0
        checks.append(("nat: bridge", True, f"{BRIDGE} is up with {subnet}, {held} container address(es) leased" if bridge
                       else f"absent: the first nat run makes {BRIDGE} with {subnet}"))
    except (OSError, ValueError) as e:
        checks.append(("nat: bridge", False, str(e)))
    why = available()
    if why:
        return checks + [("nat: nftables", False, f"libnftables cannot be loaded: {why} (install libnftables1)")]
    try:
        with Nft(json_output=True) as nft:
            ruleset = nft.run_json({"nftables": [{"list": {"ruleset": None}}]}) or {}
    except NftError as e:
        return checks + [("nat: nftables", False, str(e))]
    ours = any(item.get("table", {}).get("name") == TABLE for item in ruleset.get("nftables", ()))
    if bridge and not ours:  # the table is made with the bridge, so it would not be made again
        checks.append(("nat: nftables", False, f"table ip {TABLE} is gone while {BRIDGE} stays (a flushed ruleset?): nat "
                       "containers are neither masqueraded nor kept from the host's services; `nspawn cleanup` once none runs, and the next "
                       "nat run makes both again"))
    else:
        checks.append(("nat: nftables", True, f"libnftables works; table ip {TABLE} " + ("in place" if ours else "made by the first nat run")))
    found = conflicts(ruleset)
    checks.append(("nat: other firewalls", not found, "; ".join(found) or "no other table drops forwarded packets"))
    return checks
