"""HCN that refuses caller-chosen ids (NSPAWN_HCS_SIM_REFUSE_IDS in the simulator: passing our own
endpoint and namespace GUIDs is undocumented on some builds): the objects are made with GUID_NULL
and their ids read back into the journal, rolled back, and found by cleanup after a SIGKILL,
with or without the journal."""

from __future__ import annotations

import json

import pytest

from nspawn.backends.hcs import release
from nspawn.backends.hcs.native import computenetwork as hcn
from nspawn.backends.hcs.native.errors import HcsError
from nspawn.backends.hcs.network import hcn_ids
from tests.hcs.conftest import gone, host  # noqa: F401 (fixture)
from tests.hcs.service import Service, kill
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)

REFUSE = "NSPAWN_HCS_SIM_REFUSE_IDS"
NULL = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def refusing(monkeypatch):
    monkeypatch.setenv(REFUSE, "1")


def _endpoint_settings(network_id: str, name: str) -> dict:
    return {"Name": name, "HostComputeNetwork": network_id, "SchemaVersion": hcn.SCHEMA}


def test_the_simulator_refuses_a_chosen_id_and_takes_guid_null(sim, refusing):
    (network_id,) = hcn.find_networks("nat")
    with hcn.open_network(network_id) as network:
        with pytest.raises(HcsError) as info:
            network.create_endpoint(_endpoint_settings(network_id, "c1"), id="0e1d0000-0000-4000-8000-0000000000e1")
        assert info.value.win32 == 87 and info.value.call == "HcnCreateEndpoint"
        with network.create_endpoint(_endpoint_settings(network_id, "c1")) as endpoint:
            made = endpoint.properties()
    assert made["Name"] == "c1" and hcn.find_endpoints("c1") == [made["ID"]] and hcn.find_endpoints("c2") == []
    with pytest.raises(HcsError):
        hcn.create_namespace("0e1d0000-0000-4000-8000-0000000000a5")
    with hcn.create_namespace() as namespace:
        namespace.add_endpoint(made["ID"])
        assert namespace.endpoints() == [made["ID"]]
        namespace_id = namespace.properties()["ID"]
    assert hcn.namespaces() == [namespace_id]
    assert release.hcn_namespaces_holding({made["ID"].upper()}) == [namespace_id]


def _ran_with_ids_of_hcn(run) -> tuple[str, str]:
    """(endpoint, namespace) the run used, after checking they are HCN's, not nspawn's."""
    container_id = run.calls("HcsCreateComputeSystem")[0]["args"][0]
    ours = set(hcn_ids(container_id))
    for call in ("HcnCreateEndpoint", "HcnCreateNamespace"):
        asked = [c["args"][0] for c in run.calls(call)]
        assert asked[0] in ours and asked[1:] == [NULL], (call, asked)  # ours refused, then GUID_NULL
    namespace = run.documents("HcsCreateComputeSystem", 1)[0]["Container"]["Networking"]["Namespace"]
    endpoint = run.documents("HcnModifyNamespace")[0]["Settings"]["EndpointId"]
    assert not {namespace, endpoint} & ours
    return endpoint, namespace


def test_a_run_takes_the_ids_hcn_chose_and_releases_them(host, refusing):
    host.script("ok.sh", "echo ran\n")
    run = host.run(process_executable="ok.sh", hcs_api="v2", network="nat")
    assert (run.returncode, run.stdout) == (0, "ran\n"), run.stderr
    endpoint, namespace = _ran_with_ids_of_hcn(run)
    assert [c["args"][0] for c in run.calls("HcnDeleteNamespace")] == [namespace]
    assert [c["args"][0] for c in run.calls("HcnDeleteEndpoint")] == [endpoint]
    assert run.live == {}, run.live


def test_a_failed_start_rolls_back_what_hcn_made_with_its_own_ids(host, refusing):
    host.script("ok.sh", "echo should not run\n")
    run = host.run(process_executable="ok.sh", hcs_api="v2", network="nat",
                   faults=f"computecore!HcsStartComputeSystem={0x80370105:#x}")
    assert run.returncode == 125 and "HcsStartComputeSystem failed" in run.stderr, run.stderr
    endpoint, namespace = _ran_with_ids_of_hcn(run)
    assert [c["args"][0] for c in run.calls("HcnDeleteEndpoint")] == [endpoint]
    assert run.live == {} and host.scratch_folders() == [], run.live


def _killed(service: Service) -> dict:
    """A v2 nat launcher SIGKILLed mid-run on an HCN refusing our ids; what HCN holds then."""
    launcher, payload = service.launch("v2", "nat")
    kill(launcher)
    assert gone(payload)
    left = service.left()
    [endpoint], [namespace] = left["endpoints"], left["namespaces"]
    [journal] = service.journals.glob("*.journal")
    assert not {endpoint["ID"], namespace["ID"]} & set(hcn_ids(journal.stem))
    return left


def test_cleanup_after_sigkill_releases_the_ids_the_journal_read_back(host, refusing):
    service = Service(host)
    _killed(service)
    result = service.nspawn("cleanup")
    assert result.returncode == 0, result.stderr
    assert service.left() == {} and service.ps() == []


def test_a_sweep_finds_them_by_name_when_the_journal_is_gone(host, refusing):
    service = Service(host)
    left = _killed(service)
    [journal] = service.journals.glob("*.journal")
    journal.unlink()
    container_id = journal.stem
    removed = service.sweep()
    assert sorted(removed) == sorted([
        f"{container_id}: scratch layer {host.layers / container_id}",
        f"{container_id}: HCN namespace {left['namespaces'][0]['ID']}",
        f"{container_id}: HNS endpoint {left['endpoints'][0]['ID']}"])
    assert service.left() == {} and service.sweep() == []


def test_an_endpoint_made_before_its_id_reached_the_journal_is_found_by_name(sim, refusing):
    """A launcher killed between HCN's create and the journal's update: the entry still names
    nspawn's id, which HCN never made, and the container's name."""
    (network_id,) = hcn.find_networks("nat")
    with hcn.open_network(network_id) as network:
        network.create_endpoint(_endpoint_settings(network_id, "nspawn-killed")).close()
        network.create_endpoint(_endpoint_settings(network_id, "nspawn-other")).close()
    [made] = hcn.find_endpoints("nspawn-killed")
    ours, _ = hcn_ids("nspawn-killed")
    assert release.release_hcn_endpoint({"id": ours, "name": "nspawn-killed"}) == [made]
    assert [e["Name"] for e in sim.ledger()["endpoints"]] == ["nspawn-other"]
    assert release.release_hcn_endpoint({"id": ours, "name": "nspawn-killed"}) == []
