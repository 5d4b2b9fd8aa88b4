"""Config → LinuxPlan: everything the Linux backend will do, decided without touching the host
(it also runs on Windows and macOS, for `nspawn run --dry-run`)."""

from __future__ import annotations

import os

from nspawn.backends.linux import users
from nspawn.backends.linux.devices import Rule, v1_files
from nspawn.backends.linux.devices import rules as device_rules
from nspawn.config.derived import container_executable, host_executable, stdout_host_path
from nspawn.config.host import DEFAULT_PATH
from nspawn.config.model import Config, Limits
from nspawn.hostfacts import allowed_cpus, cpu_count
from nspawn.records import record
from nspawn.units import mask_to_cpus, mib_to_bytes

DEFAULT_SCRATCH_PARENT = "/var/tmp/nspawn"  # on disk, not tmpfs: a container's writes must not eat RAM
CPU_PERIOD_US = 100_000
# The container's init shares its pids group (the process that forks init stays outside);
# max_processes counts the payload's own processes, as a Windows job does.
INIT_PROCESSES = 1
_MIN_CPU_QUOTA_US = 1_000  # the kernel refuses smaller quotas
# Bounded defaults, each overridable by its field: /tmp as systemd-nspawn sizes it, /dev/shm as
# Docker does, and a process limit that stops a fork bomb long before the host's pid_max.
DEFAULT_TMP_SIZE = "10%"  # tmpfs takes a share of the host's memory as it is
DEFAULT_SHM_MB = 64
DEFAULT_MAX_PROCESSES = 4096

# Docker's default capability set, by bit number (linux/capability.h).
CAPABILITY_BITS = {
    "CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
    "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
    "AUDIT_WRITE": 29, "SETFCAP": 31,
}


@record
class BindMount:
    source: str  # host path (symlinks are resolved at run time, before the container sees it)
    target: str  # container path
    read_only: bool


@record
class CgroupLimits:
    """The limits in the kernel's units; zero or empty means not asked."""

    memory_bytes: int = 0
    cpu_quota_us: int = 0
    cpu_period_us: int = CPU_PERIOD_US
    cpus: tuple[int, ...] = ()
    io_iops: int = 0
    io_bps: int = 0
    pids_max: int = 0


@record
class LinuxPlan:
    argv: tuple[str, ...]
    executable: str  # container path, or a command name looked up in the container's PATH
    env: tuple[tuple[str, str], ...]
    cwd: str
    hostname: str
    namespaces: tuple[str, ...]
    network: str
    lower_dir: str  # the overlay's read-only layer
    host_view: str | None  # without a parent layer, how much of the host's / (hostview.py); else None
    scratch_parent: str  # the per-run scratch dir (upper, work, root) is made below it
    mounts: tuple[BindMount, ...]  # in mount order: parents before children
    tmpfs: tuple[tuple[str, int], ...]  # (container path, size in bytes or 0), mounted before the binds
    tmp_size: str  # /tmp's and /dev/shm's tmpfs size= (bytes or a share of memory; "": the kernel's default)
    shm_size: str
    scratch_bytes: int  # the upper layer on a tmpfs of this size; 0: on disk, unbounded
    process_directory: str | None
    host_executable: str | None  # a relative executable's host path, checked again at run time
    stdout_file: str | None  # host path the output is copied to
    limits: CgroupLimits
    asked: Limits
    capabilities: tuple[str, ...]
    devices: tuple[Rule, ...]  # the devices the payload may use (devices.py enforces them)
    timeout_seconds: float
    stop_grace_seconds: float
    seccomp: str  # "default", "unconfined" or a profile's host path (seccomp_filter compiles it)
    user: str  # NAME|UID[:GROUP|GID], looked up in the container's own files at run time (users.py)
    private_users: bool  # the container's ids on a host range of their own (userns.py)
    resolv_conf: str  # copy-host, keep or none (etc_files.py)
    timezone: str  # copy-host or keep
    tty: str  # "auto" (decided at run time: the launcher's stdin and stdout are terminals), "always", "never"
    lower_layers: tuple[str, ...] = ()  # an image's layers (short links, top first), then instead of lower_dir
    image: object = None  # the config's nspawn.images.use.ResolvedImage
    ports: tuple = ()  # config.ports.PortMapping, with network "nat"

    @property
    def capability_mask(self) -> int:
        return sum(1 << CAPABILITY_BITS[name] for name in self.capabilities)

    def to_json(self) -> dict:
        data = self._asdict()
        data["env"] = dict(self.env)
        for name in users.ACCOUNT_VARIABLES:
            data["env"].setdefault(name, f"<{name} of {self.user} in the container's /etc/passwd, at run time>")
        data["mounts"] = [m._asdict() for m in self.mounts]
        data["tmpfs"] = [{"target": target, "size_bytes": size} for target, size in self.tmpfs]
        data["limits"] = self.limits._asdict()
        data["asked"] = self.asked.asked()
        data["capability_mask"] = f"{self.capability_mask:016x}"
        data["ports"] = [p.text() for p in self.ports]
        data["image"] = self.image.to_json() if self.image is not None else None
        data["devices"] = [value for _, value in v1_files(self.devices)]
        return data


def plan(config: Config) -> LinuxPlan:
    executable = container_executable(config)
    # HOME, USER and LOGNAME come from the container's passwd file at run time (users.environment).
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8"}
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    env["container"] = "nspawn"
    env.update(config.environment)

    mounts = []
    if config.process_directory:
        mounts.append(BindMount(config.process_directory, config.mapped_directory, config.mapped_directory_read_only))
    mounts += [BindMount(m.host_path, m.container_path, m.read_only) for m in config.mounts]
    mounts.sort(key=lambda m: m.target.rstrip("/").count("/"))
    capabilities = _capabilities(config.user, config.allow_mknod)

    return LinuxPlan(
        argv=(executable, *config.process_arguments),
        executable=executable,
        env=tuple(env.items()),
        cwd=config.working_directory or config.mapped_directory or "/",
        hostname=config.hostname or os.urandom(4).hex(),
        namespaces=("mount", "pid", "uts", "ipc") + (("net",) if config.network != "host" else ()),
        network=config.network,
        lower_dir="" if config.resolved_image else config.parent_layer_directory or "/",
        host_view=None if config.parent_layer_directory or config.resolved_image else config.host_view,
        scratch_parent=os.environ.get("NSPAWN_SCRATCH_DIR") or DEFAULT_SCRATCH_PARENT,
        mounts=tuple(mounts),
        tmpfs=tuple(sorted(((t.container_path, mib_to_bytes(t.size_mb)) for t in config.tmpfs),
                           key=lambda t: t[0].rstrip("/").count("/"))),
        tmp_size=_tmpfs_size(config.tmp_size_mb, DEFAULT_TMP_SIZE),
        shm_size=_tmpfs_size(config.shm_size_mb, str(mib_to_bytes(DEFAULT_SHM_MB))),
        scratch_bytes=mib_to_bytes(config.scratch_size_mb),
        process_directory=config.process_directory,
        host_executable=host_executable(config),
        stdout_file=stdout_host_path(config),
        limits=cgroup_limits(config.limits, config.private_users == "pick"),
        asked=config.limits,
        capabilities=capabilities,
        devices=device_rules("MKNOD" in capabilities),
        timeout_seconds=config.timeout_seconds,
        stop_grace_seconds=config.stop_grace_seconds,
        seccomp=config.seccomp,
        user=config.user or users.ROOT,
        private_users=config.private_users == "pick",
        resolv_conf=resolv_conf_mode(config.resolv_conf, config.network),
        timezone=config.timezone,
        tty=config.tty,
        lower_layers=config.resolved_image.layers if config.resolved_image else (),
        image=config.resolved_image,
        ports=_published(config.ports),
    )


def _capabilities(user: str | None, allow_mknod: bool) -> tuple[str, ...]:
    """Docker's set for root, less CAP_MKNOD unless asked (Docker keeps it, relying on the
    device cgroup alone); none at all for any other user."""
    if not users.is_root(user):
        return ()
    return tuple(c for c in CAPABILITY_BITS if c != "MKNOD" or allow_mknod)


def resolv_conf_mode(mode: str, network: str) -> str:
    """`auto`: the host's resolvers where the container has a network, its root's own file without one."""
    if mode != "auto":
        return mode
    return "keep" if network == "none" else "copy-host"


def _tmpfs_size(mb: int | None, default: str) -> str:
    if mb is None:
        return default
    return str(mib_to_bytes(mb)) if mb else ""


def _published(texts: tuple[str, ...]) -> tuple:
    if not texts:
        return ()
    from nspawn.config.ports import parse

    return tuple(parse(text) for text in texts)


def cgroup_limits(limits: Limits, private_users: bool = False) -> CgroupLimits:
    quota = 0
    if limits.max_cpu_percent:
        # A share of the whole host, as on Windows: 50% of 4 CPUs is 2 CPUs' worth of time.
        quota = max(_MIN_CPU_QUOTA_US, round(limits.max_cpu_percent / 100 * cpu_count() * CPU_PERIOD_US))
    cpus = mask_to_cpus(limits.cpu_affinity)
    if limits.cpus_count:
        cpus = (cpus or tuple(allowed_cpus()))[:limits.cpus_count]
    return CgroupLimits(
        memory_bytes=mib_to_bytes(limits.max_ram_mb),
        cpu_quota_us=quota,
        cpus=cpus,
        io_iops=limits.max_storage_iops,
        io_bps=limits.max_storage_bandwidth_bytes_per_sec,
        # With private users the container's first process joins the groups too (init.py).
        pids_max=(limits.max_processes or DEFAULT_MAX_PROCESSES) + INIT_PROCESSES + private_users,
    )
