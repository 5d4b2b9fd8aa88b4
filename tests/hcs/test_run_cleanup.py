"""What a SIGKILLed launcher leaves with HCS, and what `nspawn ps` and `nspawn cleanup` make of
it: the launcher, `ps` and `cleanup` are processes seeing one simulated HCS (service.py)."""

from __future__ import annotations

import json
import signal

import pytest

from tests.hcs.conftest import gone, host  # noqa: F401 (fixture)
from tests.hcs.service import Service, SweepFailed, kill
from tests.hcs_sim.fixtures import sim, sim_library  # noqa: F401 (fixtures)
from tests.hcs_sim.ledger import persisted

MATRIX = pytest.mark.parametrize("api,network", [("v1", "none"), ("v1", "nat"), ("v2", "none"), ("v2", "nat")])


@MATRIX
def test_cleanup_removes_what_a_killed_launcher_left(host, api, network):
    service = Service(host)
    launcher, payload = service.launch(api, network)
    kill(launcher)

    # The document asks HCS to end the system with its creator's last handle: the payload goes.
    assert gone(payload)
    [row] = service.ps()
    assert row["state"] == "orphaned" and row["launcher_pid"] == launcher.pid
    left = service.left()
    assert "systems" not in left
    assert [(layer["activated"], layer["prepared"]) for layer in left["layers"]] == [(True, True)]
    assert left["scratch folders"] == [row["id"]]
    assert ("endpoints" in left) == (network == "nat")
    assert ("namespaces" in left) == (network == "nat" and api == "v2")

    result = service.nspawn("cleanup")
    assert result.returncode == 0, result.stderr
    assert service.left() == {}
    assert service.ps() == []
    assert not list(service.journals.glob("*.journal"))


@MATRIX
def test_cleanup_terminates_a_system_whose_journal_is_gone(host, api, network):
    """A launcher that cannot run (stopped) and whose journal was deleted: its system is
    "unjournaled", and cleanup terminates it through the backend's terminate_owned."""
    service = Service(host)
    launcher, payload = service.launch(api, network)
    launcher.send_signal(signal.SIGSTOP)
    try:
        for journal in service.journals.glob("*.journal"):
            journal.unlink()
        [row] = service.ps()
        assert row["state"] == "unjournaled" and row["launcher_pid"] is None
        assert len(persisted(service.state)["systems"]) == 1

        result = service.nspawn("cleanup")
        assert result.returncode == 0, result.stderr
        assert f"{row['id']}: terminated its compute system" in result.stdout
        assert f"removed {row['id']}: scratch layer" in result.stdout  # then swept what it left
        assert gone(payload)
        assert service.left() == {} and service.ps() == []
    finally:
        kill(launcher)


def swept(container_id: str, api: str, service: Service) -> list[str]:
    """What sweep should report removing for one container, from what the service holds."""
    from nspawn.backends.hcs.network import hcn_ids

    endpoint, namespace = hcn_ids(container_id)
    left = service.left()
    found = [f"{container_id}: scratch layer {service.host.layers / container_id}"]
    if api == "v2" and left.get("namespaces"):
        found += [f"{container_id}: HCN endpoint {endpoint}", f"{container_id}: HCN namespace {namespace}"]
    if api == "v1":
        found += [f"{container_id}: HNS endpoint {e['ID']}" for e in left.get("endpoints", [])]
    return sorted(found)


@MATRIX
def test_sweep_removes_what_a_killed_launcher_left_when_its_journal_is_gone(host, api, network):
    service = Service(host)
    container_id = service.killed_and_unjournaled(api, network)
    assert service.ps() == [] and ("endpoints" in service.left()) == (network == "nat")

    expected = swept(container_id, api, service)
    assert sorted(service.sweep()) == expected
    assert service.left() == {}
    assert service.sweep() == []


def test_nspawn_cleanup_sweeps_what_a_journal_no_longer_names(host):
    service = Service(host)
    expected = swept(service.killed_and_unjournaled("v2", "nat"), "v2", service)
    result = service.nspawn("cleanup")
    assert result.returncode == 0, result.stderr
    assert sorted(line.removeprefix("removed ") for line in result.stdout.splitlines()) == expected
    assert service.left() == {}


def test_a_sweep_lists_the_hns_endpoints_once_for_all_the_containers_it_looks_at(host):
    service = Service(host)
    killed = {service.killed_and_unjournaled(api, "nat") for api in ("v1", "v1", "v2")}
    removed = service.sweep()
    assert {line.split(":")[0] for line in removed} == killed and service.left() == {}
    assert sum(1 for line in removed if ": HNS endpoint " in line) == 2
    sweep_calls = json.loads(host.ledger_path.read_text())["calls"]
    assert [c["args"][:2] for c in sweep_calls if c["call"] == "vmcompute!HNSCall"].count(["GET", "/endpoints/"]) == 1


def test_a_layer_sweep_cannot_destroy_is_named_and_the_rest_still_goes(host):
    service = Service(host)
    container_id = service.killed_and_unjournaled("v1", "nat")
    with pytest.raises(SweepFailed) as failed:
        service.sweep(faults="DestroyLayer=0x80370105")
    assert failed.value.message == (f"not removed: {container_id}: DestroyLayer failed: 0x80370105 HCS_E_INVALID_STATE")
    [endpoint] = failed.value.removed
    assert endpoint.startswith(f"{container_id}: HNS endpoint ")
    assert set(service.left()) == {"layers", "scratch folders"}
    assert sorted(service.sweep()) == [f"{container_id}: scratch layer {host.layers / container_id}"]
    assert service.left() == {}


def test_sweep_never_touches_what_a_live_launcher_or_a_journal_names(host):
    service = Service(host)
    alive, alive_payload = service.launch("v2", "nat")
    held = service.left()
    killed, _ = service.launch("v1", "nat")
    kill(killed)  # its journal stays: cleanup's to finish, not sweep's
    # HCS ends the killed launcher's system on its own (TerminateOnLastHandleClosed), after the
    # kill: what stays is taken once it has, or the sweep would seem to have removed it.
    before = _settled(service, lambda left: len(left.get("systems", [])) == 1)
    assert service.sweep() == [] and service.left() == before
    ids = {row["id"] for row in service.ps()}
    assert service.sweep(live=ids) == [] and service.left() == before

    result = service.nspawn("cleanup")
    assert result.returncode == 0, result.stderr
    assert service.left() == held and not gone(alive_payload, timeout=0.2)
    alive.send_signal(signal.SIGINT)
    alive.communicate(timeout=60)
    assert alive.returncode == 128 + signal.SIGINT
    assert service.left() == {}


def _settled(service: Service, done, timeout: float = 10.0) -> dict:
    """service.left() once done(it) holds, or as it is after `timeout` (the test's own
    assertions then say what did not happen)."""
    import time

    deadline = time.monotonic() + timeout
    while not done(left := service.left()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def test_cleanup_leaves_a_running_launcher_alone(host):
    service = Service(host)
    launcher, payload = service.launch("v2", "nat")
    before = service.left()
    result = service.nspawn("cleanup")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert not gone(payload, timeout=0.2)
    assert service.left() == before and [r["state"] for r in service.ps()] == ["running"]

    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 128 + signal.SIGINT, err
    assert gone(payload) and service.left() == {} and service.ps() == []


def test_an_hns_endpoint_whose_id_never_reached_the_journal_is_found_by_name(sim):
    """A v1 launcher killed between HNS's answer and the journal update left an entry with only
    the endpoint's Name (the container id); the releaser finds it by that name."""
    from nspawn.backends.hcs.native.vmcompute import hns_call
    from nspawn.backends.hcs.release import release_hns_endpoint

    nat = [n["ID"] for n in hns_call("GET", "/networks/") if n["Name"] == "nat"][0]
    hns_call("POST", "/endpoints/", {"VirtualNetwork": nat, "Name": "nspawn-killed"})
    other = hns_call("POST", "/endpoints/", {"VirtualNetwork": nat, "Name": "someone-else"})["ID"]
    release_hns_endpoint({"what": "nspawn-killed", "name": "nspawn-killed"})
    release_hns_endpoint({"what": "nspawn-killed", "name": "nspawn-killed"})
    assert [e["ID"] for e in sim.ledger()["endpoints"]] == [other]
