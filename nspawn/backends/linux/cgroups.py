"""Control groups, the mechanics: which layout the host has, enabling controllers, making and
removing the run's groups, writing their files, the disks under a path and what the memory
group measured. What each controller's files hold is limits.py's.

Only the groups a run's limits need are made (a run without limits makes none), named after
the container, so that limits set on the launcher still hold above them: on v1 below the
launcher's own group; on v2 below its parent (Layout.v2_base says why).
"""

from __future__ import annotations

import errno
import os
import _signal as signal  # its C module: the signal package imports enum, 2 ms of every run
import time

from nspawn.backends.linux import devices, limits
from nspawn.records import record


@record
class Layout:
    version: int  # 2: unified hierarchy holding the controllers; 1: one hierarchy per controller
    v2_mount: str | None = None
    v2_own: str = "/"
    v1: dict[str, str] = {}  # v1 controller -> its mountpoint joined with our own group (never mutated)

    def available(self, controller: str) -> bool:
        if self.version == 1:
            return limits.BY_NAME[controller].hierarchy in self.v1
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
    controllers = {c.hierarchy for c in limits.CONTROLLERS}
    if v2_mount and not controllers & set(v1):
        return Layout(2, v2_mount, own_v2)
    return Layout(1, v2_mount, "/", {k: v for k, v in v1.items() if k in controllers or k == devices.V1_HIERARCHY})


UNIFIED = "v2"  # the key of the one group a v2 run makes; v1 groups go by their hierarchy


def group_key(layout: Layout, controller: str) -> str:
    """The key of the group that holds a controller's files."""
    return UNIFIED if layout.version == 2 else limits.BY_NAME[controller].hierarchy


def enable(layout: Layout, controllers: list[str]) -> None:
    """Let the groups made in the v2 base use `controllers` (v1 hierarchies need nothing)."""
    if layout.version == 1:
        return
    control = os.path.join(layout.v2_base(), "cgroup.subtree_control")
    enabled = _read(control).split()
    missing = [c for c in controllers if c not in enabled]
    # Controllers enabled here stay enabled after the run, as runc and systemd leave them: that
    # sets no limit, and turning them off again would fail or break while another container
    # below still uses them. So this write is not a journaled resource.
    if missing:
        write(control, " ".join("+" + n for n in missing))


def directories(layout: Layout, controllers: list[str], name: str) -> dict[str, str]:
    """group_key -> the directory of the group to make for `controllers`."""
    if layout.version == 2:
        return {UNIFIED: os.path.join(layout.v2_base(), name)}
    return {key: os.path.join(layout.v1[key], name) for key in (group_key(layout, c) for c in controllers)}


def namespace_view(layout: Layout, groups: dict[str, str]) -> list[tuple[str, str, str]]:
    """The container's read-only /sys/fs/cgroup: (directory below it, file system type, mount
    options) for each hierarchy the container has a group in. Mounted inside the container's
    cgroup namespace, each shows that group as its root; hierarchies it has no group in are left
    out, so nothing above or beside its groups is in view."""
    if layout.version == 2:
        return [("", "cgroup2", "")] if UNIFIED in groups else []
    view = []
    for line in _read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] != "cgroup":
            continue
        controllers = [o for o in fields[sep + 3].split(",") if o not in ("rw", "ro")]
        if any(key in controllers for key in groups):
            view.append((os.path.basename(fields[4]), "cgroup", ",".join(controllers)))
    return view


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
    path = groups.get(group_key(layout, "memory"))
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
