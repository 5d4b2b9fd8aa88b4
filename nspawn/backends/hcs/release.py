"""One idempotent release function per journal kind of the HCS backend. Each works from the
journal entry's JSON alone (objects are opened by id, layers named by folder), so `nspawn
cleanup` can run them in a fresh process after the launcher was killed; "not found" means
already released. Those of objects HCS may not hold any more say whether they removed one,
for the report of leftovers.py."""

from __future__ import annotations

import os
import time

# The package imports RELEASERS, and validating a config imports the package: what releasing
# needs is imported when something is released.

SETTLE_ATTEMPTS = 20
SETTLE_SECONDS = 0.05


def unless_gone(action, *args) -> bool:
    """Runs a removal; False when HCS says there was nothing to remove."""
    from nspawn.backends.hcs.native.errors import HcsError, is_not_found

    try:
        action(*args)
    except HcsError as e:
        if not is_not_found(e):
            raise
        return False
    return True


def opened(open_, *args):
    """The object opened by id, or None when it no longer exists."""
    from nspawn.backends.hcs.native.errors import HcsError, is_not_found

    try:
        return open_(*args)
    except HcsError as e:
        if is_not_found(e):
            return None
        raise


def _opened_system(generation, id: str):
    """The system opened by id, or None when it no longer exists. A system being torn down
    can refuse to be watched for a moment (invalid state; moby's
    daemon/graphdriver/windows/windows.go retries enumerations that fail so while a silo is
    torn down), as one its launcher terminated just before this rollback does: asked again
    until it answers or is gone."""
    from nspawn.backends.hcs.native.errors import HcsError, is_invalid_state

    for attempt in range(1, SETTLE_ATTEMPTS + 1):
        try:
            return opened(generation.open, id)
        except HcsError as e:
            if not is_invalid_state(e) or attempt == SETTLE_ATTEMPTS:
                raise
        time.sleep(SETTLE_SECONDS)


def release_system(data: dict) -> None:
    """Terminates the compute system if it still exists, and waits for its end."""
    from nspawn.backends.hcs.generations import GENERATIONS

    generation = GENERATIONS[data.get("api", "v2")]()
    system = _opened_system(generation, data["id"])
    if system is None:
        return
    with system:
        generation.terminate(system)


# The compute system handles this process holds, by container id: the run's own, closed by the
# last release of its journal (release_system_handle).
_held: dict[str, object] = {}


def hold(id: str, system) -> None:
    _held[id] = system


def release_system_handle(data: dict) -> None:
    """Closes the run's handle to its system, after the journal has released the system, the
    network and the layers, as hcsshim closes it last (cmd/containerd-shim-runhcs-v1/
    task_hcs.go, close). Another process (`nspawn cleanup`) holds none: nothing to do there."""
    system = _held.pop(data["id"], None)
    if system is not None:
        system.close()


def release_hcn_attachment(data: dict) -> None:
    """Detaches the endpoint from the namespace (a Remove request of HcnModifyNamespace), so
    both can go."""
    from nspawn.backends.hcs.native import computenetwork as hcn

    namespace = None if data.get("acquired") is False else opened(hcn.open_namespace, data["namespace"])
    if namespace is None:
        return
    with namespace:
        unless_gone(namespace.remove_endpoint, data["endpoint"])


def release_hcn_namespace(data: dict) -> bool:
    from nspawn.backends.hcs.native import computenetwork as hcn

    return unless_gone(hcn.delete_namespace, data["id"])


def release_hcn_endpoint(data: dict) -> list[str]:
    """The ids it deleted. An entry naming an id HCN never made (it refused ours, network.py,
    and the launcher died before the entry got HCN's) finds the endpoint by its Name."""
    from nspawn.backends.hcs.native import computenetwork as hcn

    if unless_gone(hcn.delete_endpoint, data["id"]):
        return [data["id"]]
    ids = hcn.find_endpoints(data["name"]) if data.get("name") else []
    return [id for id in ids if unless_gone(hcn.delete_endpoint, id)]


def hcn_namespaces_holding(endpoint_ids: set[str]) -> list[str]:
    """Ids of the HCN namespaces holding one of these endpoints: a namespace has no name, so one
    made with an id of HCN's choosing that no journal names is found by its endpoint."""
    from nspawn.backends.hcs.native import computenetwork as hcn

    wanted = {id.lower() for id in endpoint_ids}
    found = []
    for id in hcn.namespaces():
        namespace = opened(hcn.open_namespace, id)
        if namespace is None:
            continue
        with namespace:
            if wanted & {e.lower() for e in namespace.endpoints()}:
                found.append(id)
    return found


def hns_endpoints_named(name: str) -> list[str]:
    """Ids of the endpoints HNS knows by this Name."""
    from nspawn.backends.hcs.native.vmcompute import hns_call

    return [e["ID"] for e in hns_call("GET", "/endpoints/") or [] if e.get("Name") == name]


def release_hns_endpoint(data: dict) -> list[str]:
    """The ids it deleted."""
    from nspawn.backends.hcs.native.vmcompute import hns_call

    ids = [data["id"]] if data.get("id") else hns_endpoints_named(data["name"]) if data.get("name") else []
    # none when HNS never made it
    return [id for id in ids if unless_gone(hns_call, "DELETE", f"/endpoints/{id}")]


def _layer_step(data: dict, call) -> None:
    """A state of the scratch layer is undone unless HCS said it never happened or the folder
    (and with it every state) is gone."""
    if data.get("acquired") is False or not os.path.isdir(data["folder"]):
        return
    call(data["home"], data["id"])


def release_layer_preparation(data: dict) -> None:
    from nspawn.backends.hcs.native import vmcompute as vm

    _layer_step(data, vm.unprepare_layer)


def release_layer_activation(data: dict) -> None:
    from nspawn.backends.hcs.native import vmcompute as vm

    _layer_step(data, vm.deactivate_layer)


def release_layer(data: dict) -> None:
    """DestroyLayer removes the scratch folder and its sandbox.vhdx."""
    from nspawn.backends.hcs.native import vmcompute as vm

    _layer_step(data, vm.destroy_layer)


RELEASERS = {
    "hcs-system-handle": release_system_handle,
    "hcs-system": release_system,
    "hcn-attachment": release_hcn_attachment,
    "hcn-namespace": release_hcn_namespace,
    "hcn-endpoint": release_hcn_endpoint,
    "hns-endpoint": release_hns_endpoint,
    "hcs-layer-preparation": release_layer_preparation,
    "hcs-layer-activation": release_layer_activation,
    "hcs-layer": release_layer,
}
