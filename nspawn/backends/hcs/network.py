"""network "nat": an endpoint on the host's NAT network. v2 hosts get an HCN endpoint inside an
HCN namespace whose id goes into the document (as hcsshim's internal/hcsoci/network.go does);
v1 hosts an HNS endpoint whose id goes into the document's EndpointList (as moby's
libcontainerd/local/local_windows.go does).

The HCN ids are chosen here (derived from the container id), so that each journal entry
names its object before HCN makes it; release.py removes them, and leftovers.py finds them
without a journal. Passing our own id is undocumented on some builds (hcsshim passes
GUID_NULL): where HCN refuses it, the object is made with GUID_NULL and HCN's id read back into
the entry (_created); the endpoint is then found by its Name (the container id) where the id is
not known, and the namespace by the endpoint it holds.
"""

from __future__ import annotations

import uuid

from nspawn.backends.hcs.acquire import acquire
from nspawn.errors import LaunchError

NAT_NETWORK = "nat"
HCN_SCHEMA = {"Major": 2, "Minor": 0}  # of HCN's documents: endpoints, namespaces, queries
# uuid5 namespace of the HCN ids nspawn derives from container ids.
_HCN_IDS = uuid.UUID("6e737061-776e-4863-8e00-6e6574776b00")


def hcn_ids(container_id: str) -> tuple[str, str]:
    """(endpoint id, namespace id) of a container: derived from its id rather than random, so
    a container whose journal is lost still names them (leftovers.py); an HCN namespace has no
    name of its own to be found by."""
    return tuple(str(uuid.uuid5(_HCN_IDS, f"{container_id}/{kind}")) for kind in ("endpoint", "namespace"))


_PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17}


def endpoint_v2(name: str, network_id: str, ports: tuple = ()) -> dict:
    """The HCN endpoint's settings: published ports as PortMapping policies (VIP: the host
    address a mapping is limited to)."""
    settings = {"Name": name, "HostComputeNetwork": network_id, "SchemaVersion": HCN_SCHEMA}
    if ports:
        settings["Policies"] = [{"Type": "PortMapping", "Settings": {
            "Protocol": _PROTOCOL_NUMBERS[p.protocol], "InternalPort": p.container_port, "ExternalPort": p.host_port,
            **({"VIP": p.host_ip} if p.host_ip else {})}} for p in ports]
    return settings


def endpoint_v1(name: str, network_id: str, ports: tuple = ()) -> dict:
    """The HNS v1 endpoint: published ports as NAT policies, which have no host address."""
    limited = [p.text() for p in ports if p.host_ip]
    if limited:
        raise LaunchError(f"HNS v1 cannot limit a published port to one host address ({', '.join(limited)}); "
                          "publish it on every address, or use a host with HCN (hcs_api v2)")
    settings = {"VirtualNetwork": network_id, "Name": name}
    if ports:
        settings["Policies"] = [{"Type": "NAT", "Protocol": p.protocol.upper(), "InternalPort": p.container_port,
                                 "ExternalPort": p.host_port} for p in ports]
    return settings


def _no_network() -> LaunchError:
    return LaunchError(f"no NAT network named {NAT_NETWORK!r} on this host; "
                       "create one (Docker for Windows and the Containers feature make it) or use network none")


def attach_v2(session, name: str, raise_if_stopped, ports: tuple = ()) -> str:
    """The HCN namespace id holding a new endpoint on the NAT network."""
    from nspawn.backends.hcs.native import computenetwork as hcn

    journal = session.journal
    networks = hcn.find_networks(NAT_NETWORK)
    if not networks:
        raise _no_network()
    raise_if_stopped()
    endpoint_id, namespace_id = hcn_ids(name)
    entry = journal.record("hcn-endpoint", what=endpoint_id, id=endpoint_id, name=name)
    with hcn.open_network(networks[0]) as network:
        settings = endpoint_v2(name, networks[0], ports)
        with _created(journal, entry, lambda id: network.create_endpoint(settings, id=id)):
            endpoint_id = entry.data["id"]
    raise_if_stopped()
    entry = journal.record("hcn-namespace", what=namespace_id, id=namespace_id)
    with _created(journal, entry, hcn.create_namespace) as namespace:
        namespace_id = entry.data["id"]
        raise_if_stopped()
        attachment = journal.record("hcn-attachment", what=f"{endpoint_id} in {namespace_id}",
                                    namespace=namespace_id, endpoint=endpoint_id)
        acquire(journal, attachment, namespace.add_endpoint, endpoint_id)
    raise_if_stopped()
    return namespace_id


def _created(journal, entry, create):
    """The HCN object create(id) makes with the id the entry names or, where HCN refuses a
    caller's id, create(None) makes with GUID_NULL, its id (HCN's properties) then written into
    the entry with the refusal. Should the retry fail too, its own error is the one raised."""
    from nspawn.backends.hcs.native.errors import HcsError

    try:
        return create(entry.data["id"])
    except HcsError as e:
        refusal = e.message
    made = create(None)
    try:
        id = made.properties()["ID"]
    except BaseException:
        made.close()
        raise
    journal.update(entry, what=id, id=id, refused=refusal)
    return made


def attach_v1(session, name: str, raise_if_stopped, ports: tuple = ()) -> str:
    """The id of a new HNS endpoint on the NAT network."""
    from nspawn.backends.hcs.native.vmcompute import hns_call

    networks = [n for n in hns_call("GET", "/networks/") or [] if n.get("Name") == NAT_NETWORK]
    if not networks:
        raise _no_network()
    raise_if_stopped()
    # HNS v1 chooses the id: the entry gets it as soon as HNS answers, and until then names
    # the endpoint by its Name (the container id), which the releaser looks up.
    entry = session.journal.record("hns-endpoint", what=name, name=name)
    endpoint = hns_call("POST", "/endpoints/", endpoint_v1(name, networks[0]["ID"], ports))
    session.journal.update(entry, what=endpoint["ID"], id=endpoint["ID"])
    raise_if_stopped()
    return endpoint["ID"]
