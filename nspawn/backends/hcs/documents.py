"""The HCS JSON documents for a config: compute system and process, schema 1.0 (vmcompute.dll)
and 2.1 (computecore.dll). Pure: values known only at run time (the scratch volume's path,
the layer GUIDs, the network namespace) are passed in, or shown as placeholders in a dry run.
"""

from __future__ import annotations

import ntpath
import posixpath
import re
from dataclasses import dataclass

from nspawn.backends.hcs.cmdline import command_line
from nspawn.config.model import Config

OWNER = "nspawn"
DEFAULT_WORKING_DIRECTORY = "C:\\"


@dataclass(frozen=True)
class Storage:
    """What the layer calls produce, or placeholders for a dry run."""

    scratch_folder: str  # the new sandbox layer's folder
    volume_path: str  # from GetLayerMountPath, with its trailing backslash
    layers: tuple[tuple[str, str], ...]  # (GUID, folder), top-most first, base last


def host_paths(path: str):
    """Host paths are Windows paths, except under the simulator's test seam (see
    nspawn/config/build.py) where they are this POSIX host's own."""
    return posixpath if path.startswith("/") else ntpath


def stdout_path(config: Config) -> str | None:
    """The host file stdout_filename names in the process directory, whichever separators it uses."""
    if not config.stdout_filename:
        return None
    return host_paths(config.process_directory).join(config.process_directory, *re.split(r"[\\/]", config.stdout_filename))


def placeholder_storage(config: Config, container_id: str, chain: list[str] | None = None) -> Storage:
    """The storage a dry run shows: the layer chain when it could be read here, the GUIDs
    (NameToGuid is HCS's own algorithm) and the volume as placeholders."""
    parent = config.parent_layer_directory
    paths = host_paths(parent)
    if chain:
        layers = tuple((f"<NameToGuid({paths.basename(p)})>", p) for p in chain)
    else:
        layers = ((f"<NameToGuid({paths.basename(parent)})>", parent), ("<…>", f"<the layers in {paths.join(parent, 'layerchain.json')}>"))
    return Storage(
        scratch_folder=paths.join(paths.dirname(parent), container_id),
        volume_path="\\\\?\\Volume{<GetLayerMountPath at run time>}\\",
        layers=layers,
    )


def argv(config: Config) -> list[str]:
    exe = config.process_executable
    if config.mapped_directory and not (len(exe) > 2 and exe[1] == ":"):
        exe = ntpath.join(config.mapped_directory, exe)
    return [exe, *config.process_arguments]


def _mapped(config: Config) -> list[tuple[str, str, bool]]:
    out = []
    if config.process_directory:
        out.append((config.process_directory, config.mapped_directory, config.mapped_directory_read_only))
    out += [(m.host_path, m.container_path, m.read_only) for m in config.mounts]
    return out


def cpu_maximum(percent: float) -> int:
    """Processor cycles per 10,000 over the whole host: percent × 100, within 1–10000."""
    return max(1, min(10000, round(percent * 100)))


def _processor(config: Config) -> tuple[str, int] | None:
    """The one processor limit a document carries, as (v2 name, value): Count, Maximum and
    Weight exclude each other, and Maximum is the one Windows enforces (enforcement.py)."""
    limits = config.limits
    if limits.max_cpu_percent:
        return "Maximum", cpu_maximum(limits.max_cpu_percent)
    if limits.cpus_count:
        return "Count", limits.cpus_count
    return None


def v2_compute_system(config: Config, storage: Storage, hostname: str, namespace: str | None) -> dict:
    limits = config.limits
    container: dict = {
        "GuestOs": {"HostName": hostname},
        "Storage": {"Layers": [{"Id": guid, "Path": path} for guid, path in storage.layers], "Path": storage.volume_path},
        "MappedDirectories": [{"HostPath": h, "ContainerPath": c, "ReadOnly": ro} for h, c, ro in _mapped(config)],
    }
    qos = {k: v for k, v in (("IopsMaximum", limits.max_storage_iops),
                             ("BandwidthMaximum", limits.max_storage_bandwidth_bytes_per_sec)) if v}
    if qos:
        container["Storage"]["QoS"] = qos
    if limits.max_ram_mb:
        container["Memory"] = {"SizeInMB": limits.max_ram_mb}
    processor = _processor(config)
    if processor:
        container["Processor"] = dict([processor])
    if namespace:
        container["Networking"] = {"Namespace": namespace, "AllowUnqualifiedDnsQuery": True}
    container["RegistryChanges"] = {"AddValues": [{
        "Key": {"Hive": "System", "Name": "ControlSet001\\Control"},
        "Name": "WaitToKillServiceTimeout", "Type": "String", "StringValue": "2147483647"}]}
    return {"Owner": OWNER, "SchemaVersion": {"Major": 2, "Minor": 1},
            "ShouldTerminateOnLastHandleClosed": True, "Container": container}


def v1_compute_system(config: Config, container_id: str, storage: Storage, hostname: str,
                      endpoints: list[str], utility_vm: str | None = None) -> dict:
    """utility_vm: the UtilityVM folder of the parent chain for Hyper-V isolation (the first
    layer that has one, as hcsshim's internal/uvmfolder/locate.go finds it); the base layer's
    when not given."""
    limits = config.limits
    hyperv = config.isolation == "hyperv"
    doc: dict = {
        "SystemType": "Container",
        "Name": container_id,
        "Owner": OWNER,
        "IsDummy": False,
        "IgnoreFlushesDuringBoot": True,
        "LayerFolderPath": storage.scratch_folder,
        "Layers": [{"ID": guid, "Path": path} for guid, path in storage.layers],
        "HostName": hostname,
        "MappedDirectories": [
            {"HostPath": h, "ContainerPath": c, "ReadOnly": ro,
             **({"IOPSMaximum": limits.max_storage_iops} if limits.max_storage_iops else {}),
             **({"BandwidthMaximum": limits.max_storage_bandwidth_bytes_per_sec} if limits.max_storage_bandwidth_bytes_per_sec else {})}
            for h, c, ro in _mapped(config)
        ],
        "HvPartition": hyperv,
        "EndpointList": endpoints,
        "AllowUnqualifiedDNSQuery": True,
        "Servicing": False,
        # As in the v2 document: the container dies with the launcher's last handle.
        "TerminateOnLastHandleClosed": True,
    }
    if hyperv:
        # The utility VM image ships in the base layer; HCS attaches the scratch itself.
        base = storage.layers[-1][1] if storage.layers else config.parent_layer_directory
        doc["HvRuntime"] = {"ImagePath": utility_vm or ntpath.join(base, "UtilityVM")}
    else:
        doc["VolumePath"] = storage.volume_path.rstrip("\\")  # v1 wants no trailing backslash
    processor = _processor(config)
    if processor:
        doc["Processor" + processor[0]] = processor[1]
    for key, value in (("MemoryMaximumInMB", limits.max_ram_mb), ("StorageIOPSMaximum", limits.max_storage_iops),
                       ("StorageBandwidthMaximum", limits.max_storage_bandwidth_bytes_per_sec)):
        if value:
            doc[key] = value
    return doc


def process(config: Config) -> dict:
    """ProcessParameters (v2) / ProcessConfig (v1): the same field names."""
    return {
        "CommandLine": command_line(argv(config)),
        "WorkingDirectory": config.working_directory or config.mapped_directory or DEFAULT_WORKING_DIRECTORY,
        "Environment": dict(config.environment),
        "EmulateConsole": False,
        "CreateStdInPipe": True,
        "CreateStdOutPipe": True,
        "CreateStdErrPipe": True,
    }
