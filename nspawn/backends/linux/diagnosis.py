"""`nspawn doctor` for Linux: what this host lets the backend isolate and enforce, and why not."""

from __future__ import annotations

import os
import shutil
import tempfile

from nspawn.backends.linux import cgroups, devices, enforcement, libc, limits, mounts


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


def _private_users(lower: str) -> str | None:
    """Why `private_users: pick` cannot run here (a user namespace, an id-mapped mount of the
    root's layer), or None; the probe's namespace maps a range no container is given."""
    from nspawn.backends.linux import hostpaths, userns

    def probe() -> None:
        fd = userns.namespace(userns.LAST + 1)
        userns.idmap(hostpaths.layer(lower), fd, lower)  # the child's exit closes both

    return _in_child(probe)


def _swap(layout) -> str:
    """How swap would stand to a container's memory limit. On v2 only a group whose parent hands
    memory down has the file that limits swap, so a group like a run's is made to look."""
    if layout.version == 1:
        return enforcement.swap(layout, layout.v1["memory"])
    probe = os.path.join(layout.v2_base(), f"nspawn-doctor-{os.getpid()}")
    try:
        cgroups.enable(layout, ["memory"])
        os.mkdir(probe)
    except OSError:
        return enforcement.swap(layout, None)
    try:
        return enforcement.swap(layout, probe)
    finally:
        os.rmdir(probe)


def doctor(config=None) -> list[tuple[str, bool, str]]:
    """The host's abilities; with a config, judged for what that config asks (its root, its limits)."""
    checks: list[tuple[str, bool, str]] = []
    root = os.geteuid() == 0
    checks.append(("root", root, "running as root" if root else "the Linux backend needs root (private users map the container's ids, not the launcher's)"))
    for name, flag in libc.NAMESPACE_FLAGS.items():
        why = _in_child(lambda: libc.unshare(flag))
        checks.append((f"{name} namespace", why is None, "usable" if why is None else why))
    lower = config.parent_layer_directory if config and config.parent_layer_directory else "/"
    why = _overlay(lower)
    checks.append(("overlayfs", why is None, f"an overlay on {lower} mounts" if why is None else why))
    why = _private_users(lower)
    checks.append(("private users", why is None,
                   f"a user namespace and an id-mapped mount of {lower} work" if why is None else why))

    from nspawn.backends.linux.nat import doctor as network

    checks += network()
    try:
        layout = cgroups.detect()
    except OSError as e:
        return checks + [("cgroups", False, f"cannot read the cgroup layout: {e}")]
    checks.append(("cgroup layout", True, layout.describe()))
    checks.append(("devices", *devices.doctor_line(layout)))
    facts = limits.Facts(layout.version, swap=_swap(layout) if layout.available("memory") else None)
    for controller in limits.CONTROLLERS:
        if layout.available(controller.name):
            ok, detail = controller.host_report(facts)
        else:
            ok, detail = False, f"absent: {', '.join(controller.fields)} cannot be enforced"
        checks.append((f"{controller.name} controller", ok, detail))
    if config is not None:
        from nspawn.backends.linux.plan import plan

        the_plan = plan(config)
        asked = config.limits.asked()
        verdict = enforcement.judge(the_plan, layout, limits.needed(the_plan.limits))
        _, failed, _ = limits.outcome(the_plan.limits, asked, verdict.controllers, facts)
        why_not = {**verdict.not_enforced, **failed}
        for name in asked:
            why = why_not.get(name)
            detail = "will be enforced" if why is None else f"cannot be enforced: {why}"
            caveat = limits.OF_FIELD[name].caveat(layout.version)
            if why is None and caveat:
                detail += f" ({caveat})"
            checks.append((f"{name} (asked by {config.source})", why is None, detail))
    return checks
