"""The HCS backend: Windows Server containers through the Host Compute Service.

Validating and planning are pure and run on any OS (`--dry-run` shows the exact v1 and v2
documents); they import nothing native, as validate runs on every load of a Windows config.
"""

from __future__ import annotations

import os
import sys

from nspawn import hostfacts
from nspawn.backends.hcs import cmdline
from nspawn.backends.hcs.enforcement import verdict
from nspawn.backends.hcs.release import RELEASERS  # noqa: F401 (the backend interface)
from nspawn.config import derived
from nspawn.config.ports import parse as parse_port
from nspawn.config.model import Config
from nspawn.errors import LaunchError
from nspawn.records import record

DEFAULT_WORKING_DIRECTORY = "C:\\"
# How a dry run shows the compute system's id: the session names each run (journal, ps, cleanup).
RUN_TIME_ID = "<the run's container id>"


@record
class MappedDirectory:
    host_path: str
    container_path: str
    read_only: bool


@record
class Limit:
    """A limit the config asks for: whether Windows enforces it under the plan's isolation
    (enforcement.py), with the value reported applied, or why not."""

    field: str
    enforced: bool
    detail: object


@record
class HcsPlan:
    argv: tuple[str, ...]  # argv[0] is the executable's container path
    command_line: str  # argv encoded for CommandLineToArgvW
    working_directory: str
    environment: tuple[tuple[str, str], ...]
    mapped_directories: tuple[MappedDirectory, ...]  # the process directory first
    memory_mb: int  # 0 (here and below): no limit
    processor: tuple[str, int] | None  # the one processor limit, as (v2 name, value)
    storage_iops: int
    storage_bandwidth: int  # bytes per second
    cpu_affinity: int  # the mask asked
    silo_affinity: int  # the mask set on the silo (in processor groups at run time: affinity.py); 0 when not enforced
    limits: tuple[Limit, ...]
    hostname: str
    isolation: str
    api: str  # v1, v2, or auto: settled at run time (generations.choose)
    network: str
    parent_layer: str
    stdout_file: str | None  # host path
    timeout_seconds: float
    stop_grace_seconds: float
    tty: str  # auto (decided at run time: console), always, never
    user: str | None  # the process's User; None: the image's default
    ports: tuple = ()  # config.ports.PortMapping, on the endpoint (network.endpoint_v2/v1)

    def to_json(self) -> dict:
        from nspawn.backends.hcs import documents, layers

        chain = _known_chain(self.parent_layer)
        storage = _placeholder_storage(self.parent_layer, chain)
        hyperv = self.isolation == "hyperv"
        utility_vm = layers.utility_vm_image([path for _, path in storage.layers]) if hyperv else None
        nat = self.network == "nat"
        # As a run from this launcher's own console would send it: the console and its size
        # are read at run time.
        process = documents.process(self, console(self.tty))
        return {
            "backend": "hcs",
            "api": self.api,
            "compute_system_id": RUN_TIME_ID,
            "isolation": self.isolation,
            "layers": {"parent": self.parent_layer, "chain": chain, "scratch": storage.scratch_folder},
            "cpu_affinity": hex(self.cpu_affinity) if self.cpu_affinity else None,
            "stdout_file": self.stdout_file,
            "limits_applied": {limit.field: limit.detail for limit in self.limits if limit.enforced},
            "limits_not_enforced": {limit.field: limit.detail for limit in self.limits if not limit.enforced},
            "timeout_seconds": self.timeout_seconds,
            "stop_grace_seconds": self.stop_grace_seconds,
            "endpoint": _endpoints(self.ports) if nat else None,
            "v2": {
                # Hyper-V takes the v1 route: a v2 document would need a utility VM of its own.
                "compute_system": None if hyperv else documents.v2_compute_system(
                    self, storage, "<HCN namespace at run time>" if nat else None),
                "process": process,
            },
            "v1": {
                "compute_system": documents.v1_compute_system(
                    self, RUN_TIME_ID, storage, ["<HNS endpoint at run time>"] if nat else [], utility_vm),
                "process": process,
            },
            # How a change of the launcher's console size reaches the process (HcsModifyProcess).
            "console_resize": documents.console_size(("<rows>", "<columns>")) if process["EmulateConsole"] else None,
        }


def _endpoints(ports: tuple) -> dict:
    """The endpoint documents a dry run shows, the network's id a placeholder."""
    from nspawn.backends.hcs import network

    shown = {"v2": network.endpoint_v2(RUN_TIME_ID, "<the NAT network's id>", ports)}
    try:
        shown["v1"] = network.endpoint_v1(RUN_TIME_ID, "<the NAT network's id>", ports)
    except LaunchError as e:
        shown["v1"] = {"refused": str(e)}
    return shown


def _known_chain(parent: str) -> list[str] | None:
    """The parent's layer chain when this host can read it; a dry run reads, never writes."""
    from nspawn.backends.hcs.layers import read_chain

    if not os.path.isdir(parent):
        return None
    try:
        return read_chain(parent)
    except LaunchError:
        return None


def _placeholder_storage(parent: str, chain: list[str] | None):
    """The storage a dry run shows: the layer chain when it could be read here, the GUIDs
    (NameToGuid is HCS's own algorithm) and the volume as placeholders."""
    from nspawn.backends.hcs import layers
    from nspawn.backends.hcs.documents import Storage

    if chain:
        shown = tuple((f"<NameToGuid({layers.folder_name(p)})>", p) for p in chain)
    else:
        listed = derived.host_path_module(parent).join(parent, layers.LAYERCHAIN)
        shown = ((f"<NameToGuid({layers.folder_name(parent)})>", parent), ("<…>", f"<the layers in {listed}>"))
    return Storage(
        scratch_folder=layers.Scratch(parent, RUN_TIME_ID).folder,
        volume_path="\\\\?\\Volume{<GetLayerMountPath at run time>}\\",
        layers=shown,
    )


def console(tty: str) -> tuple[int, int] | tuple[()] | None:
    """The emulated console the process gets (the `tty` field, output.terminal_asked): None
    for pipes; else the launcher's console size as (height, width), or () when the launcher
    has no console to take it from."""
    from nspawn.output import terminal_asked

    return (console_size() or ()) if terminal_asked(tty) else None


def console_size() -> tuple[int, int] | None:
    """(height, width) of the launcher's console, read from its output (Windows answers only
    for an output handle)."""
    for fd in (1, 2, 0):
        try:
            columns, rows = os.get_terminal_size(fd)
        except (OSError, ValueError):
            continue
        return rows, columns
    return None


def api_route(hcs_api: str, isolation: str) -> str:
    """The API generation a config takes: Hyper-V isolation always the v1 one (HvPartition),
    the one route that works on every Windows version; `auto` is settled at run time."""
    return "v1" if isolation == "hyperv" else hcs_api


def cpu_maximum(percent: float) -> int:
    """Processor cycles per 10,000 over the whole host: percent × 100, within 1–10000."""
    return max(1, min(10000, round(percent * 100)))


def _processor(limits, host_cpus: int) -> tuple[str, int] | None:
    """Count, Maximum and Weight exclude each other, and Maximum is the one Windows enforces
    (enforcement.py says the count gives way to it). A Count above the host's CPUs is capped at
    them, as hcsshim's NormalizeProcessorCount does (internal/hcsoci/resources.go)."""
    if limits.max_cpu_percent:
        return "Maximum", cpu_maximum(limits.max_cpu_percent)
    if limits.cpus_count:
        return "Count", min(limits.cpus_count, host_cpus)
    return None


# HCS's schema 2 holds the storage QoS values in 32-bit signed fields (hcsshim
# internal/hcs/schema2/storage_qo_s.go): a larger value would not reach Windows as asked.
INT32_MAX = 2**31 - 1
_INT32_FIELDS = ("max_storage_iops", "max_storage_bandwidth_bytes_per_sec")


def generated_hostname() -> str:
    """8 random hex digits, as hcsshim names a container without one, never all digits:
    Windows refuses a computer name of digits only (Microsoft's docs, "Naming conventions in
    Active Directory for computers, domains, sites, and OUs")."""
    while True:
        name = os.urandom(4).hex()
        if not name.isdigit():
            return name


_SHOWN = {
    "max_ram_mb": lambda mb: f"{mb} MB",
    "max_cpu_percent": lambda percent: f"{cpu_maximum(percent)} of 10000 processor cycles",
    "cpu_affinity": hex,
}


def _limits(config: Config, host_cpus: int) -> tuple[Limit, ...]:
    asked = config.limits.asked()
    limits = []
    for field, value in asked.items():
        enforced, why = verdict(field, config.isolation, asked)
        detail = _SHOWN.get(field, lambda v: v)(value) if enforced else why
        if field == "cpus_count" and value > host_cpus and not asked.get("max_cpu_percent"):
            capped = f"capped at the host's {host_cpus} CPUs"
            detail = f"{host_cpus} ({capped})" if enforced else f"{why} ({capped})"
        limits.append(Limit(field, enforced, detail))
    return tuple(limits)


def plan(config: Config) -> HcsPlan:
    limits = config.limits
    argv = (derived.container_executable(config), *config.process_arguments)
    mapped = [MappedDirectory(m.host_path, m.container_path, m.read_only) for m in config.mounts]
    if config.process_directory:
        mapped.insert(0, MappedDirectory(config.process_directory, config.mapped_directory,
                                         config.mapped_directory_read_only))
    host_cpus = hostfacts.cpu_count()
    decided = _limits(config, host_cpus)
    affinity_enforced = any(limit.field == "cpu_affinity" and limit.enforced for limit in decided)
    return HcsPlan(
        argv=argv,
        command_line=cmdline.command_line(list(argv)),
        working_directory=config.working_directory or config.mapped_directory or DEFAULT_WORKING_DIRECTORY,
        environment=tuple(config.environment.items()),
        mapped_directories=tuple(mapped),
        memory_mb=limits.max_ram_mb,
        processor=_processor(limits, host_cpus),
        storage_iops=limits.max_storage_iops,
        storage_bandwidth=limits.max_storage_bandwidth_bytes_per_sec,
        cpu_affinity=limits.cpu_affinity,
        silo_affinity=limits.cpu_affinity if affinity_enforced else 0,
        limits=decided,
        hostname=config.hostname or generated_hostname(),
        isolation=config.isolation,
        api=api_route(config.hcs_api, config.isolation),
        network=config.network,
        parent_layer=config.parent_layer_directory,
        stdout_file=derived.stdout_host_path(config),
        timeout_seconds=config.timeout_seconds,
        stop_grace_seconds=config.stop_grace_seconds,
        tty=config.tty,
        user=config.user,
        ports=tuple(parse_port(text) for text in config.ports),
    )


def validate(config: Config) -> list:
    """The HCS backend's own rules, as nspawn.config.load.Finding: a config they accept plans."""
    from nspawn.config.load import Finding

    findings = []
    # argv[0] is the executable's container path: below the mapped directory when relative.
    parts = [("process_executable", config.process_executable)]
    if derived.container_executable(config) != config.process_executable:
        parts.append(("mapped_directory", config.mapped_directory))
    for key, value in parts:
        if value is None:
            continue  # an image's Entrypoint will name it, checked once the image is resolved
        problem = cmdline.program_problem(value)
        if problem:
            findings.append(Finding((key,), f"found {value!r}; expected {problem}"))
    for field in _INT32_FIELDS:
        value = getattr(config.limits, field)
        if value > INT32_MAX:
            findings.append(Finding((field,), f"found {value}; expected at most {INT32_MAX}: HCS holds it in a "
                                              "32-bit signed field"))
    if config.hostname and config.hostname.isdigit():
        findings.append(Finding(("hostname",), f"found {config.hostname!r}; expected a letter or hyphen in it: "
                                               "Windows refuses a computer name of digits only"))
    if config.user and ":" in config.user:
        findings.append(Finding(("user",), f"found {config.user!r}; expected a Windows user name such as ContainerUser "
                                           "or ContainerAdministrator (a Windows name has no ':' and no group)"))
    if config.isolation == "hyperv" and config.hcs_api == "v2":
        findings.append(Finding(("hcs_api",), "found 'v2' with isolation 'hyperv'; expected 'v1' or 'auto': "
                                              "Hyper-V containers run through vmcompute.dll (HvPartition)"))
    return findings


def execute(plan: HcsPlan, session) -> None:
    from nspawn.backends.hcs.native.loader import simulated

    if sys.platform != "win32" and not simulated():
        raise LaunchError("the hcs backend needs a Windows host with the Containers feature; "
                          "`nspawn run --dry-run` shows its documents here")
    from nspawn.backends.hcs.runtime import execute as run

    run(plan, session)


def owned_systems() -> list[dict]:
    """The compute systems nspawn made (Owner "nspawn"), running or not: [{"id", "state", "api"}];
    [] where no HCS library loads. Both API generations see the same systems; the one a run
    would take is asked."""
    from nspawn.backends.hcs.documents import OWNER
    from nspawn.backends.hcs.generations import choose
    from nspawn.backends.hcs.native.errors import HcsError, LibraryUnavailable

    api = choose("auto")
    try:
        if api == "v2":
            from nspawn.backends.hcs.native.computecore import enumerate_compute_systems
        else:
            from nspawn.backends.hcs.native.vmcompute import enumerate_compute_systems
        systems = enumerate_compute_systems({"Owners": [OWNER]})
    except LibraryUnavailable:
        return []
    except HcsError as e:
        raise LaunchError(e.message) from None
    return [{"id": s["Id"], "state": s.get("State"), "api": api} for s in systems if s.get("Owner") == OWNER]


def terminate_owned(id: str) -> None:
    """Terminates one of them and waits for its end; a system already gone is no error."""
    from nspawn.backends.hcs.generations import choose
    from nspawn.backends.hcs.native.errors import HcsError
    from nspawn.backends.hcs.release import release_system

    try:
        release_system({"id": id, "api": choose("auto")})
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
