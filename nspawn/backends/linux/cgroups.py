"""Control groups: which layout the host has, making the run's groups and setting its limits,
reading what they measured, and removing them.

Only the groups a run's limits need are made (a run without limits makes none), named after
the container, so that limits set on the launcher still hold above them: on v1 below the
launcher's own group; on v2 below its parent (Layout.v2_base says why).
"""

from __future__ import annotations

import errno
import os
import signal
import time

from nspawn.backends.linux.plan import CgroupLimits
from nspawn.records import record

# The controllers go by their v2 names; on v1 each has a hierarchy of its own, of the same name
# but for io.
V1_HIERARCHY = {"memory": "memory", "cpu": "cpu", "cpuset": "cpuset", "io": "blkio", "pids": "pids"}
# Which config field each controller enforces.
FIELDS = {"memory": ("max_ram_mb",), "cpu": ("max_cpu_percent",), "cpuset": ("cpus_count", "cpu_affinity"),
          "io": ("max_storage_iops", "max_storage_bandwidth_bytes_per_sec"), "pids": ("max_processes",)}


@record
class Layout:
    version: int  # 2: unified hierarchy holding the controllers; 1: one hierarchy per controller
    v2_mount: str | None = None
    v2_own: str = "/"
    v1: dict[str, str] = {}  # v1 controller -> its mountpoint joined with our own group (never mutated)

    def available(self, controller: str) -> bool:
        if self.version == 1:
            return V1_HIERARCHY[controller] in self.v1
        return controller in _read(os.path.join(self.v2_base(), "cgroup.controllers")).split()

    def v2_base(self) -> str:
        """The v2 group the container's group is made in: our own at the root, else its parent.
        A group other than the root that holds processes (ours holds the launcher) can hand down
        no domain controller (memory, cpu, io), and handing down a threaded one (cpuset, pids)
        makes it a thread root, whose new children refuse processes (EOPNOTSUPP)."""
        own = os.path.join(self.v2_mount, self.v2_own.lstrip("/"))
        return own if self.v2_own == "/" else os.path.dirname(own)

    def describe(self) -> str:
        if self.version == 2:
            return f"cgroup v2 at {self.v2_mount} (own group {self.v2_own})"
        return "cgroup v1 (" + ", ".join(sorted(self.v1)) + ")" + (f" with an empty v2 hierarchy at {self.v2_mount}" if self.v2_mount else "")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise OSError(e.errno, f"cannot write {value!r} to {path}: {os.strerror(e.errno)}") from None
    finally:
        os.close(fd)


def detect() -> Layout:
    """Read the layout from our mount table and /proc/self/cgroup; assume nothing."""
    own_v1: dict[str, str] = {}
    own_v2 = "/"
    for line in _read("/proc/self/cgroup").splitlines():
        _, names, path = line.split(":", 2)
        if names == "":
            own_v2 = path
        for name in names.split(","):
            own_v1[name] = path
    v2_mount = None
    v1: dict[str, str] = {}
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, mountpoint, options = fields[sep + 1], fields[4], fields[sep + 3].split(",")
        if fstype == "cgroup2" and v2_mount is None:
            v2_mount = mountpoint
        elif fstype == "cgroup":
            for name in options:
                if name in own_v1 and name not in v1:
                    v1[name] = os.path.join(mountpoint, own_v1[name].lstrip("/"))
    controllers = set(V1_HIERARCHY.values())
    if v2_mount and not controllers & set(v1):
        return Layout(2, v2_mount, own_v2)
    return Layout(1, v2_mount, "/", {k: v for k, v in v1.items() if k in controllers})


def needed(limits: CgroupLimits) -> list[str]:
    wanted = {"memory": limits.memory_bytes, "cpu": limits.cpu_quota_us, "cpuset": limits.cpus,
              "io": limits.io_iops or limits.io_bps, "pids": limits.pids_max}
    return [c for c, v in wanted.items() if v]


def v2_parent(layout: Layout, controllers: list[str]) -> str:
    """The layout's v2 base, with the controllers enabled for its children."""
    base = layout.v2_base()
    enabled = _read(os.path.join(base, "cgroup.subtree_control")).split()
    missing = [c for c in controllers if c not in enabled]
    # Controllers enabled here stay enabled after the run, as runc and systemd leave them: that
    # sets no limit, and turning them off again would fail or break while another container
    # below still uses them. So this write is not a journaled resource.
    if missing:
        write(os.path.join(base, "cgroup.subtree_control"), " ".join("+" + n for n in missing))
    return base


def directories(layout: Layout, controllers: list[str], name: str) -> dict[str, str]:
    """Logical controller -> the directory of the group to make ("v2" for the one unified group)."""
    if layout.version == 2:
        return {"v2": os.path.join(v2_parent(layout, controllers), name)}
    return {V1_HIERARCHY[c]: os.path.join(layout.v1[V1_HIERARCHY[c]], name) for c in controllers}


def settings(layout: Layout, limits: CgroupLimits, controllers: list[str], devices: list[str],
             parent_mems: str | None, swap_limited: bool = False) -> list[tuple[str, str, str]]:
    """(group key, file, value) for `controllers`, in the order the kernel accepts them;
    `swap_limited` when the memory group has the file that keeps swap from stretching the limit."""
    v2 = layout.version == 2
    out: list[tuple[str, str, str]] = []

    def put(key_v1: str, file_v1: str, file_v2: str, value: str) -> None:
        out.append(("v2", file_v2, value) if v2 else (key_v1, file_v1, value))

    if "memory" in controllers:
        put("memory", "memory.limit_in_bytes", "memory.max", str(limits.memory_bytes))
        if swap_limited:  # v1 counts memory and swap together; v2 counts swap alone
            out.append(("v2" if v2 else "memory", swap_file(layout), "0" if v2 else str(limits.memory_bytes)))
    if "cpu" in controllers:
        if v2:
            out.append(("v2", "cpu.max", f"{limits.cpu_quota_us} {limits.cpu_period_us}"))
        else:
            out += [("cpu", "cpu.cfs_period_us", str(limits.cpu_period_us)), ("cpu", "cpu.cfs_quota_us", str(limits.cpu_quota_us))]
    if "cpuset" in controllers:
        if not v2:
            out.append(("cpuset", "cpuset.mems", parent_mems or "0"))  # v1 refuses tasks until mems is set
        put("cpuset", "cpuset.cpus", "cpuset.cpus", ",".join(map(str, limits.cpus)))
    for dev in devices:
        if v2:
            parts = ([f"riops={limits.io_iops}", f"wiops={limits.io_iops}"] if limits.io_iops else []) + \
                    ([f"rbps={limits.io_bps}", f"wbps={limits.io_bps}"] if limits.io_bps else [])
            out.append(("v2", "io.max", f"{dev} " + " ".join(parts)))
        else:
            for kind, value in (("iops", limits.io_iops), ("bps", limits.io_bps)):
                if value:
                    out += [("blkio", f"blkio.throttle.{rw}_{kind}_device", f"{dev} {value}") for rw in ("read", "write")]
    if "pids" in controllers:
        put("pids", "pids.max", "pids.max", str(limits.pids_max))
    return out


def swap_file(layout: Layout) -> str:
    return "memory.swap.max" if layout.version == 2 else "memory.memsw.limit_in_bytes"


def swap_on() -> bool:
    return len(_read("/proc/swaps").splitlines()) > 1


def block_device(path: str) -> str | None:
    """"major:minor" of the whole disk under `path`, or None when it is not on a block device
    (tmpfs, overlay, network filesystems). Throttling accepts whole disks, not partitions."""
    dev = os.stat(path).st_dev
    sys_dir = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    if not os.path.exists(sys_dir):
        return None
    if os.path.exists(os.path.join(sys_dir, "partition")):
        return _read(os.path.join(os.path.realpath(sys_dir), "..", "dev")).strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


def memory_stats(layout: Layout, groups: dict[str, str]) -> tuple[int, int | None]:
    """(OOM kills, peak bytes or None) of the run's memory group."""
    path = groups.get("v2" if layout.version == 2 else "memory")
    if path is None:
        return 0, None
    if layout.version == 2:
        events, peak_file = "memory.events", "memory.peak"
        if not os.path.exists(os.path.join(path, events)):
            return 0, None  # the run's group holds no memory controller, only others
    else:
        events, peak_file = "memory.oom_control", "memory.max_usage_in_bytes"
    kills = 0
    for line in _read(os.path.join(path, events)).splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            kills = int(value)
    try:
        peak = int(_read(os.path.join(path, peak_file)))
    except OSError:
        peak = None  # memory.peak is newer than cgroup v2 itself (Linux 5.19)
    return kills, peak


def release(data: dict) -> None:
    """Remove the group, killing whatever still runs in it first; nothing to do when it is gone."""
    path = data["path"]
    deadline = time.monotonic() + 5
    while True:
        try:
            os.rmdir(path)  # the common case: the container has ended, and its group is empty
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
        # Processes remain (or a killed one has not left yet: it stops showing in cgroup.procs
        # a moment before its group lets go of it).
        pids = _read(os.path.join(path, "cgroup.procs")).split()
        if time.monotonic() > deadline:
            raise OSError(errno.EBUSY, f"{path}: processes {' '.join(pids) or 'that have exited'} still hold it")
        if pids and os.path.exists(os.path.join(path, "cgroup.kill")):
            write(os.path.join(path, "cgroup.kill"), "1")
        else:
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.01)
