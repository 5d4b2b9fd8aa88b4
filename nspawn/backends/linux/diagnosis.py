"""`nspawn doctor` for Linux: what this host lets the backend isolate and enforce, and why not."""

from __future__ import annotations

import os
import shutil
import tempfile

from nspawn.backends.linux import cgroups, enforcement, libc, mounts


def _in_child(action) -> str | None:
    """Run `action` in a forked child (so namespaces and mounts it makes die with it);
    None when it worked, else why not."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            action()
            os._exit(0)
        except BaseException as e:
            os.write(w, str(e).encode()[:400])
            os._exit(1)
    os.close(w)
    why = os.read(r, 500).decode(errors="replace")
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return None if status == 0 else why or f"exit status {status}"


def _overlay(lower: str) -> str | None:
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read().split():
            return "overlay is not in /proc/filesystems (modprobe overlay)"
    base = tempfile.mkdtemp(prefix="nspawn-doctor-", dir="/var/tmp")
    try:
        upper, work, root = (os.path.join(base, sub) for sub in mounts.SCRATCH_DIRS)
        for path in (upper, work, root):
            os.mkdir(path)

        def mount() -> None:
            libc.unshare(libc.CLONE_NEWNS)
            libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
            libc.mount("overlay", root, "overlay", 0, mounts.overlay_options(lower, upper, work))

        return _in_child(mount)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _swap_limit_file(layout) -> bool:
    """Whether a container's memory group would have the file that limits its swap. On v2 only
    a group whose parent hands memory down has it, so a group like a run's is made to look."""
    if layout.version == 1:
        return os.path.exists(os.path.join(layout.v1["memory"], cgroups.swap_file(layout)))
    try:
        probe = os.path.join(cgroups.v2_parent(layout, ["memory"]), f"nspawn-doctor-{os.getpid()}")
        os.mkdir(probe)
    except OSError:
        return False
    try:
        return os.path.exists(os.path.join(probe, cgroups.swap_file(layout)))
    finally:
        os.rmdir(probe)


def doctor(config=None) -> list[tuple[str, bool, str]]:
    """The host's abilities; with a config, judged for what that config asks (its root, its limits)."""
    checks: list[tuple[str, bool, str]] = []
    root = os.geteuid() == 0
    checks.append(("root", root, "running as root" if root else "the Linux backend needs root (no user namespaces yet)"))
    for name, flag in libc.NAMESPACE_FLAGS.items():
        why = _in_child(lambda: libc.unshare(flag))
        checks.append((f"{name} namespace", why is None, "usable" if why is None else why))
    lower = config.parent_layer_directory if config and config.parent_layer_directory else "/"
    why = _overlay(lower)
    checks.append(("overlayfs", why is None, f"an overlay on {lower} mounts" if why is None else why))

    try:
        layout = cgroups.detect()
    except OSError as e:
        return checks + [("cgroups", False, f"cannot read the cgroup layout: {e}")]
    checks.append(("cgroup layout", True, layout.describe()))
    swap = cgroups.swap_on()
    swap_limited = layout.available("memory") and _swap_limit_file(layout)
    for controller, fields in cgroups.FIELDS.items():
        ok = layout.available(controller)
        label = ", ".join(fields)
        if not ok:
            checks.append((f"{controller} controller", False, f"absent: {label} cannot be enforced"))
            continue
        detail = f"enforces {label}"
        if controller == "memory":
            probe = cgroups.swap_file(layout)
            if swap_limited:
                detail += "; swap is limited too"
            elif swap:
                ok, detail = False, f"{probe} is missing and swap is on: a container could swap past max_ram_mb"
            else:
                detail += f"; {probe} is missing but there is no swap to escape to"
        if controller == "io" and layout.version == 1:
            detail += "; " + enforcement.V1_BUFFERED_WRITES
        if controller == "cpuset":
            detail += "; sched_setaffinity makes the payload see it"
        checks.append((f"{controller} controller", ok, detail))
    if config is not None:
        from nspawn.backends.linux.plan import plan

        the_plan = plan(config)
        verdict = enforcement.judge(the_plan, layout)
        why_not = dict(verdict.not_enforced)
        if "memory" in verdict.controllers:
            escape = enforcement.swap_escape(layout, swap_limited, the_plan.limits.memory_bytes)
            if escape:
                why_not["max_ram_mb"] = escape
        for name in config.limits.asked():
            why = why_not.get(name)
            detail = "will be enforced" if why is None else f"cannot be enforced: {why}"
            if why is None and name in cgroups.FIELDS["io"] and layout.version == 1:
                detail += f" ({enforcement.V1_BUFFERED_WRITES})"
            checks.append((f"{name} (asked by {config.source})", why is None, detail))
    return checks
