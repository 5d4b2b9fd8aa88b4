"""The HCS JSON documents of a plan: compute system and process, schema 1.0 (vmcompute.dll)
and 2.1 (computecore.dll). Pure: values known only at run time (the container id, the scratch
volume's path, the layer GUIDs, the network namespace) are passed in, or shown as placeholders
in a dry run.
"""

from __future__ import annotations

from nspawn.backends.hcs import HcsPlan
from nspawn.records import record

OWNER = "nspawn"


@record
class Storage:
    """What the layer calls produce, or placeholders for a dry run."""

    scratch_folder: str  # the new sandbox layer's folder
    volume_path: str  # from GetLayerMountPath, with its trailing backslash
    layers: tuple[tuple[str, str], ...]  # (GUID, folder), top-most first, base last


def v2_compute_system(plan: HcsPlan, storage: Storage, namespace: str | None) -> dict:
    container: dict = {
        "Storage": {"Layers": [{"Id": guid, "Path": path} for guid, path in storage.layers], "Path": storage.volume_path},
        "MappedDirectories": [{"HostPath": m.host_path, "ContainerPath": m.container_path, "ReadOnly": m.read_only}
                              for m in plan.mapped_directories],
    }
    if plan.hostname:
        container["GuestOs"] = {"HostName": plan.hostname}
    qos = {k: v for k, v in (("IopsMaximum", plan.storage_iops), ("BandwidthMaximum", plan.storage_bandwidth)) if v}
    if qos:
        container["Storage"]["QoS"] = qos
    if plan.memory_mb:
        container["Memory"] = {"SizeInMB": plan.memory_mb}
    if plan.processor:
        container["Processor"] = dict([plan.processor])
    if namespace:
        container["Networking"] = {"Namespace": namespace, "AllowUnqualifiedDnsQuery": True}
    container["RegistryChanges"] = {"AddValues": [{
        "Key": {"Hive": "System", "Name": "ControlSet001\\Control"},
        "Name": "WaitToKillServiceTimeout", "Type": "String", "StringValue": "2147483647"}]}
    return {"Owner": OWNER, "SchemaVersion": {"Major": 2, "Minor": 1},
            "ShouldTerminateOnLastHandleClosed": True, "Container": container}


def v1_compute_system(plan: HcsPlan, container_id: str, storage: Storage, endpoints: list[str], utility_vm: str | None) -> dict:
    """utility_vm: the UtilityVM folder of the layer chain (layers.utility_vm_image) under
    Hyper-V isolation; None under process isolation."""
    hyperv = plan.isolation == "hyperv"
    doc: dict = {
        "SystemType": "Container",
        "Name": container_id,
        "Owner": OWNER,
        "IsDummy": False,
        "IgnoreFlushesDuringBoot": True,
        "LayerFolderPath": storage.scratch_folder,
        "Layers": [{"ID": guid, "Path": path} for guid, path in storage.layers],
        # The storage limits are the container-wide Storage* fields alone, as v2 has only
        # Storage.QoS: a per-directory copy would cap each mapping on top of them.
        "MappedDirectories": [{"HostPath": m.host_path, "ContainerPath": m.container_path, "ReadOnly": m.read_only}
                              for m in plan.mapped_directories],
        "HvPartition": hyperv,
        "EndpointList": endpoints,
        "AllowUnqualifiedDNSQuery": True,
        "Servicing": False,
        # As in the v2 document: the container dies with the launcher's last handle.
        "TerminateOnLastHandleClosed": True,
    }
    if plan.hostname:
        doc["HostName"] = plan.hostname
    if hyperv:
        # HCS attaches the scratch to the utility VM itself.
        doc["HvRuntime"] = {"ImagePath": utility_vm}
    else:
        doc["VolumePath"] = storage.volume_path.rstrip("\\")  # v1 wants no trailing backslash
    if plan.processor:
        name, value = plan.processor
        doc["Processor" + name] = value
    for key, value in (("MemoryMaximumInMB", plan.memory_mb), ("StorageIOPSMaximum", plan.storage_iops),
                       ("StorageBandwidthMaximum", plan.storage_bandwidth)):
        if value:
            doc[key] = value
    return doc


def process(plan: HcsPlan, console: tuple[int, int] | tuple[()] | None = None) -> dict:
    """ProcessParameters (v2) / ProcessConfig (v1): the same field names. `console`: None for
    pipes; else an emulated console (a pseudo console whose output comes on the stdout pipe,
    stderr with it, as moby asks for a terminal), of (height, width) when known."""
    doc = {
        "CommandLine": plan.command_line,
        "WorkingDirectory": plan.working_directory,
        "Environment": dict(plan.environment),
        "EmulateConsole": console is not None,
        "CreateStdInPipe": True,
        "CreateStdOutPipe": True,
        "CreateStdErrPipe": console is None,
    }
    if plan.user:
        doc["User"] = plan.user  # left out, Windows runs it as the image's default user
    if console:
        doc["ConsoleSize"] = list(console)
    return doc


def console_size(size: tuple) -> dict:
    """The ProcessModifyRequest that resizes a process's emulated console to (height, width)."""
    height, width = size
    return {"Operation": "ConsoleSize", "ConsoleSize": {"Height": height, "Width": width}}
