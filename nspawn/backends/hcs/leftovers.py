"""What nspawn runs left with HCS that no journal names (the journal was deleted): scratch
layers in the layer homes nspawn has used (layers.py records them beside the journals),
the HCN namespace and endpoint whose ids derive from the container id (network.py), HCN and HNS
endpoints named after the container where HCN chose their ids, with the namespaces holding them.
The journal's own releasers remove them.

Anything a live launcher or any journal names is left alone. A journal is written before
anything is acquired and the journals are read after the leftovers are listed, so a
launcher starting meanwhile is always seen. Run it after the compute systems are gone
(terminate_owned): HCS keeps a layer that a running system uses.
"""

from __future__ import annotations

import os

from nspawn.backends.hcs import release
from nspawn.backends.hcs.layers import used_homes
from nspawn.backends.hcs.native.errors import HcsError, LibraryUnavailable
from nspawn.backends.hcs.network import hcn_ids
from nspawn.config.derived import host_path_module
from nspawn.errors import LaunchError
from nspawn.identity import PREFIX


class SweepError(LaunchError):
    """Leftovers that could not be removed; `removed` lists those that were."""

    def __init__(self, failures: list[str], removed: list[str]):
        super().__init__("not removed: " + "; ".join(failures))
        self.removed = removed


def sweep(live_ids: set[str]) -> list[str]:
    """Removes the leftovers of nspawn containers that are neither in `live_ids` nor named by
    a journal; returns what it removed, one description each ([] where HCS does not exist).
    Raises SweepError naming what it could not remove, after trying everything else."""
    from nspawn.journal import read_journals, state_dir

    homes = used_homes(state_dir())
    try:
        hns_endpoints = _hns_endpoints()
        candidates = _scratch_folders(homes) | set(hns_endpoints)
    except LibraryUnavailable:
        return []
    except HcsError as e:
        raise SweepError([e.message], []) from None
    journaled = {journal.container_id for journal in read_journals()}
    removed: list[str] = []
    failures: list[str] = []
    for container_id in sorted(candidates - set(live_ids) - journaled):
        # Each step on its own, as the journal releases: a network that stays must not keep
        # the layer.
        for step in (lambda: _network(container_id, hns_endpoints.get(container_id, [])),
                     lambda: _layers(container_id, homes)):
            try:
                removed += step()
            except HcsError as e:
                failures.append(f"{container_id}: {e.message}")
    if failures:
        raise SweepError(failures, removed)
    return removed


def _ours(name) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def _scratch_folders(homes: list[str]) -> set[str]:
    return {name for home in homes if os.path.isdir(home)
            for name in os.listdir(home) if _ours(name) and os.path.isdir(os.path.join(home, name))}


def _hns_endpoints() -> dict[str, list[str]]:
    """{container id: ids of the HNS endpoints named after it}, from one listing for the whole
    sweep."""
    from nspawn.backends.hcs.native.vmcompute import hns_call

    found: dict[str, list[str]] = {}
    for endpoint in hns_call("GET", "/endpoints/") or []:
        if _ours(endpoint.get("Name")):
            found.setdefault(endpoint["Name"], []).append(endpoint["ID"])
    return found


def _network(container_id: str, hns_endpoints: list[str]) -> list[str]:
    """In the journal's order: the HCN namespace (its endpoint detached first), the HCN
    endpoint, then the HNS endpoints named after the container (v1, or HCN's made with ids
    HCN chose, network.py), each detached from and with any namespace holding it."""
    removed = []
    endpoint, namespace = hcn_ids(container_id)
    has_hcn = True
    try:
        release.release_hcn_attachment({"namespace": namespace, "endpoint": endpoint})
        if release.release_hcn_namespace({"id": namespace}):
            removed.append(f"{container_id}: HCN namespace {namespace}")
        if release.release_hcn_endpoint({"id": endpoint}):
            removed.append(f"{container_id}: HCN endpoint {endpoint}")
        holders = release.hcn_namespaces_holding(set(hns_endpoints)) if hns_endpoints else []
    except LibraryUnavailable:
        has_hcn = False  # no HCN on this host (WS2016): its containers have HNS endpoints only
    if has_hcn:
        for holder in holders:
            for id in hns_endpoints:
                release.release_hcn_attachment({"namespace": holder, "endpoint": id})
            if release.release_hcn_namespace({"id": holder}):
                removed.append(f"{container_id}: HCN namespace {holder}")
    for id in hns_endpoints:
        if release.release_hns_endpoint({"id": id}):
            removed.append(f"{container_id}: HNS endpoint {id}")
    return removed


def _layers(container_id: str, homes: list[str]) -> list[str]:
    """Unprepare and deactivate whatever state the layer is in (HCS refuses those a killed
    launcher never reached), then DestroyLayer, which must succeed."""
    removed = []
    for home in homes:
        data = {"home": home, "id": container_id, "folder": host_path_module(home).join(home, container_id)}
        if not os.path.isdir(data["folder"]):
            continue
        for undo in (release.release_layer_preparation, release.release_layer_activation):
            try:
                undo(data)
            except HcsError:
                pass
        release.release_layer(data)
        removed.append(f"{container_id}: scratch layer {data['folder']}")
    return removed
