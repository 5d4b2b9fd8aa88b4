"""The HCS backend: Windows Server containers through the Host Compute Service.

Planning (the exact v1 and v2 documents) is pure and runs on any OS for `--dry-run`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from nspawn.backends.hcs import documents
from nspawn.config.model import Config
from nspawn.errors import LaunchError
from nspawn.identity import new_container_id

RELEASERS: dict = {}


@dataclass(frozen=True)
class HcsPlan:
    config: Config
    container_id: str
    hostname: str

    def to_json(self) -> dict:
        config = self.config
        storage = documents.placeholder_storage(config, self.container_id)
        return {
            "backend": "hcs",
            "api": config.hcs_api,
            "compute_system_id": self.container_id,
            "isolation": config.isolation,
            "layers": {"parent": config.parent_layer_directory, "scratch": storage.scratch_folder},
            "cpu_affinity": hex(config.limits.cpu_affinity) if config.limits.cpu_affinity else None,
            "stdout_file": config.stdout_filename and f"{config.process_directory}\\{config.stdout_filename}",
            "v2": {
                "compute_system": documents.v2_compute_system(
                    config, storage, self.hostname, "<HCN namespace at run time>" if config.network == "nat" else None),
                "process": documents.process(config),
            },
            "v1": {
                "compute_system": documents.v1_compute_system(
                    config, self.container_id, storage, self.hostname,
                    ["<HNS endpoint at run time>"] if config.network == "nat" else []),
                "process": documents.process(config),
            },
        }


def plan(config: Config, container_id: str | None = None) -> HcsPlan:
    return HcsPlan(config, container_id or new_container_id(), config.hostname or os.urandom(4).hex())


def execute(plan: HcsPlan, session) -> None:
    if sys.platform != "win32" and not os.environ.get("NSPAWN_HCS_LIBRARY"):
        raise LaunchError("the hcs backend needs a Windows host with the Containers feature; "
                          "`nspawn run --dry-run` shows its documents here")
    raise LaunchError("running HCS containers is not built yet; `--dry-run` shows the documents")


def doctor() -> list[tuple[str, bool, str]]:
    windows = sys.platform == "win32"
    return [("windows", windows, sys.getwindowsversion().build if windows else f"this host is {sys.platform}")]
