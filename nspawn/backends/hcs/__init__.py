"""The HCS backend: Windows Server containers through the Host Compute Service.

Planning (the exact v1 and v2 documents) is pure and runs on any OS for `--dry-run`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from nspawn.backends.hcs import documents
from nspawn.backends.hcs.release import RELEASERS  # noqa: F401 (the backend interface)
from nspawn.config.model import Config
from nspawn.errors import LaunchError
from nspawn.identity import new_container_id


def _known_chain(parent: str) -> list[str] | None:
    """The parent's layer chain when this host can read it; a dry run reads, never writes."""
    from nspawn.backends.hcs.layers import read_chain

    if not os.path.isdir(parent):
        return None
    try:
        return read_chain(parent)
    except LaunchError:
        return None


@dataclass(frozen=True)
class HcsPlan:
    config: Config
    container_id: str
    hostname: str

    def to_json(self) -> dict:
        config = self.config
        chain = _known_chain(config.parent_layer_directory)
        storage = documents.placeholder_storage(config, self.container_id, chain)
        hyperv = config.isolation == "hyperv"
        utility_vm = None
        if hyperv and chain:
            from nspawn.backends.hcs.layers import utility_vm_image

            utility_vm = utility_vm_image(chain)
        return {
            "backend": "hcs",
            # Hyper-V isolation takes the v1 route (HvPartition) on every Windows version.
            "api": "v1" if hyperv else config.hcs_api,
            "compute_system_id": self.container_id,
            "isolation": config.isolation,
            "layers": {"parent": config.parent_layer_directory, "chain": chain, "scratch": storage.scratch_folder},
            "cpu_affinity": hex(config.limits.cpu_affinity) if config.limits.cpu_affinity else None,
            "stdout_file": documents.stdout_path(config),
            "v2": {
                "compute_system": None if hyperv else documents.v2_compute_system(
                    config, storage, self.hostname, "<HCN namespace at run time>" if config.network == "nat" else None),
                "process": documents.process(config),
            },
            "v1": {
                "compute_system": documents.v1_compute_system(
                    config, self.container_id, storage, self.hostname,
                    ["<HNS endpoint at run time>"] if config.network == "nat" else [], utility_vm=utility_vm),
                "process": documents.process(config),
            },
        }


def plan(config: Config, container_id: str | None = None) -> HcsPlan:
    return HcsPlan(config, container_id or new_container_id(), config.hostname or os.urandom(4).hex())


def execute(plan: HcsPlan, session) -> None:
    if sys.platform != "win32" and not os.environ.get("NSPAWN_HCS_LIBRARY"):
        raise LaunchError("the hcs backend needs a Windows host with the Containers feature; "
                          "`nspawn run --dry-run` shows its documents here")
    from nspawn.backends.hcs.runner import execute as run

    run(plan, session)


def owned_systems() -> list[dict]:
    """The compute systems nspawn made (Owner "nspawn"), running or not: [{"id", "state", "api"}];
    [] where no HCS library loads. Both API generations see the same systems; the one a run
    would take is asked."""
    from nspawn.backends.hcs.generations import choose
    from nspawn.backends.hcs.native.errors import HcsError, LibraryUnavailable

    api = choose("auto", "process")
    try:
        if api == "v2":
            from nspawn.backends.hcs.native.computecore import enumerate_compute_systems
        else:
            from nspawn.backends.hcs.native.vmcompute import enumerate_compute_systems
        systems = enumerate_compute_systems({"Owners": [documents.OWNER]})
    except LibraryUnavailable:
        return []
    except HcsError as e:
        raise LaunchError(e.message) from None
    return [{"id": s["Id"], "state": s.get("State"), "api": api} for s in systems if s.get("Owner") == documents.OWNER]


def terminate_owned(id: str) -> None:
    """Terminates one of them and waits for its end; a system already gone is no error."""
    from nspawn.backends.hcs.generations import choose
    from nspawn.backends.hcs.native.errors import HcsError
    from nspawn.backends.hcs.release import release_system

    try:
        release_system({"id": id, "api": choose("auto", "process")})
    except HcsError as e:
        raise LaunchError(e.message) from None


def sweep(live_ids: set[str]) -> list[str]:
    """Removes what containers left with HCS that neither a live launcher (`live_ids`) nor any
    journal names: scratch layers, HCN namespaces and endpoints, HNS endpoints. Returns one
    line per object removed; raises leftovers.SweepError (a LaunchError, with `.removed`) naming
    what it could not remove. Call it after terminate_owned."""
    from nspawn.backends.hcs.leftovers import sweep as run

    return run(live_ids)


def doctor(config=None) -> list[tuple[str, bool, str]]:
    from nspawn.backends.hcs.diagnosis import doctor as check

    return check(config)
