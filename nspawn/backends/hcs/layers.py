"""The container's scratch layer, as Docker's windowsfilter driver makes one (moby
daemon/graphdriver/windows/windows.go): a new sandbox layer beside the parent, activated and
prepared over the parent's chain, then its volume path.

Each state it goes through (created, activated, prepared) is its own journal entry, recorded
before the call that makes it, so the reverse order of the journal is UnprepareLayer,
DeactivateLayer, DestroyLayer whatever happened before; release.py holds their releasers.
"""

from __future__ import annotations

import json
import os
import time

from nspawn.backends.hcs.acquire import acquire
from nspawn.backends.hcs.documents import Storage
from nspawn.config.derived import host_path_module
from nspawn.errors import LaunchError

LAYERCHAIN = "layerchain.json"
# hcsshim retries Activate+Prepare while the volume is not ready, seen on WS2019 under load
# (internal/layers/wcow_mount.go).
PREPARE_ATTEMPTS = 5
PREPARE_RETRY_SECONDS = 0.1
_RETRY_WIN32 = (21, 1167)  # ERROR_NOT_READY, ERROR_DEVICE_NOT_CONNECTED


def folder_name(path: str) -> str:
    return host_path_module(path).basename(path.rstrip("\\/"))


def read_chain(parent: str) -> list[str]:
    """[parent] + its layerchain.json: top-most first, base last. A missing file is an empty
    chain, as moby reads it."""
    path = host_path_module(parent).join(parent, LAYERCHAIN)
    try:
        with open(path, encoding="utf-8") as f:
            listed = json.load(f)
    except FileNotFoundError:
        listed = None
    except (OSError, ValueError) as e:
        raise LaunchError(f"{path}: {getattr(e, 'strerror', None) or e}; expected a JSON array of layer folders") from None
    if listed is None:
        listed = []
    if not isinstance(listed, list) or not all(isinstance(p, str) and p for p in listed):
        raise LaunchError(f"{path}: expected a JSON array of layer folder paths")
    return [parent, *listed]


def utility_vm_image(chain: list[str]) -> str:
    """<first layer of the chain with a UtilityVM folder>\\UtilityVM, as hcsshim's
    internal/uvmfolder/locate.go looks for it; else the base's."""
    for layer in chain:
        image = host_path_module(layer).join(layer, "UtilityVM")
        if os.path.isdir(image):
            return image
    return host_path_module(chain[-1]).join(chain[-1], "UtilityVM")


HOMES_RECORD = "hcs-layer-homes"


def used_homes(directory: str) -> list[str]:
    """The layer homes recorded in `directory` (the journals' state directory), once each."""
    try:
        with open(os.path.join(directory, HOMES_RECORD), encoding="utf-8") as f:
            return list(dict.fromkeys(line.rstrip("\n") for line in f if line.strip()))
    except FileNotFoundError:
        return []


def remember_home(directory: str, home: str) -> None:
    """Adds a layer home to the record before a scratch layer is made there: a scratch layer
    whose journal is lost is found by its folder name there (leftovers.py). One short appended
    line per home, so launchers starting together cannot tear the file."""
    if home in used_homes(directory):
        return
    with open(os.path.join(directory, HOMES_RECORD), "a", encoding="utf-8") as f:
        f.write(home + "\n")


class Scratch:
    """Where the scratch layer lives: HomeDir = the layers' root, id = the folder name (as
    Docker's windowsfilter driver addresses layers), beside the parent layer."""

    def __init__(self, parent: str, container_id: str):
        paths = host_path_module(parent)
        self.parent = parent
        self.home = paths.dirname(parent.rstrip("\\/"))
        self.id = container_id
        self.folder = paths.join(self.home, container_id)

    def journal_data(self) -> dict:
        return {"what": self.folder, "home": self.home, "id": self.id, "folder": self.folder}


def mount(scratch: Scratch, chain: list[str], session, *, on_host: bool, raise_if_stopped) -> Storage:
    """Creates the scratch layer; with on_host (process isolation) also mounts it on the host
    and returns its volume path. Hyper-V isolation leaves the mounting to HCS, which attaches
    sandbox.vhdx to the utility VM itself (moby libcontainerd/local/local_windows.go sends no
    VolumePath for Hyper-V)."""
    from nspawn.backends.hcs.native import vmcompute as vm
    from nspawn.backends.hcs.native.errors import HcsError

    journal = session.journal
    where = scratch.journal_data()
    layers = tuple((str(vm.name_to_guid(folder_name(p))), p) for p in chain)
    raise_if_stopped()
    remember_home(journal.directory, scratch.home)
    journal.record("hcs-layer", **where)
    vm.create_sandbox_layer(scratch.home, scratch.id, folder_name(scratch.parent), layers)
    raise_if_stopped()
    if not on_host:
        return Storage(scratch.folder, "", layers)
    activation = journal.record("hcs-layer-activation", **where)
    preparation = None
    for attempt in range(1, PREPARE_ATTEMPTS + 1):
        acquire(journal, activation, vm.activate_layer, scratch.home, scratch.id)
        raise_if_stopped()
        preparation = preparation or journal.record("hcs-layer-preparation", **where)
        try:
            acquire(journal, preparation, vm.prepare_layer, scratch.home, scratch.id, layers)
            break
        except HcsError as e:
            if e.win32 not in _RETRY_WIN32 or attempt == PREPARE_ATTEMPTS:
                raise
        vm.deactivate_layer(scratch.home, scratch.id)
        journal.update(activation, acquired=False)
        time.sleep(PREPARE_RETRY_SECONDS)
    raise_if_stopped()
    volume = vm.get_layer_mount_path(scratch.home, scratch.id)
    if not volume:
        raise LaunchError(f"GetLayerMountPath gave no volume path for the scratch layer {scratch.folder}")
    raise_if_stopped()
    return Storage(scratch.folder, volume if volume.endswith("\\") else volume + "\\", layers)
