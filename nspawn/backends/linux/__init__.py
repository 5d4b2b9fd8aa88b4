"""The Linux backend: namespaces, an overlay root and cgroups, through libc, without helpers.

Kept light to import: planning (`--dry-run`, on any OS) and validating need only `plan` and
the config's own modules; the runtime and the doctor are imported when called.
"""

import os
import sys

from nspawn.backends.linux import users
from nspawn.backends.linux.plan import LinuxPlan, plan
from nspawn.backends.linux.release import RELEASERS
from nspawn.config.host import within
from nspawn.config.load import Finding

__all__ = ["LinuxPlan", "plan", "validate", "execute", "doctor", "tidy", "many_runs", "RELEASERS"]

# The container's own /, /proc, /dev and /sys, which the backend mounts itself: a mapping may be
# none of them, nor lie below one but the root.
RESERVED = ("/", "/proc", "/dev", "/sys")


def validate(config) -> list[Finding]:
    """The Linux backend's own rules on a config that passed the file checks."""
    binds = [(("mapped_directory",), config.mapped_directory)] if config.mapped_directory else []
    binds += [(("mounts", i, "container_path"), m.container_path) for i, m in enumerate(config.mounts)]
    memory = [(("tmpfs", i, "container_path"), t.container_path) for i, t in enumerate(config.tmpfs)]
    findings = [Finding(where, f"found {target!r}, which would cover the container's {reserved}; expected another directory")
                for where, target in binds + memory for reserved in RESERVED
                if target == reserved or (reserved != "/" and within(target, reserved))]
    # The tmpfs are mounted before the binds, so one below a bind would be hidden by it.
    findings += [Finding(where, f"found {target!r}, below {bound!r}, whose mount would hide it; expected a path outside it")
                 for where, target in memory for _, bound in binds if target != bound and within(target, bound)]
    if config.allow_mknod and not users.is_root(config.user):
        findings.append(Finding(("allow_mknod",), f"found true with user {config.user!r}, who keeps no capability "
                                                  "(only root may keep CAP_MKNOD); expected it absent"))
    root = "parent_layer_directory" if config.parent_layer_directory else "image" if config.image else None
    if root and config.host_view != "os":
        # the view is of the host's /, which a parent layer or an image replaces: it would be dropped unsaid
        findings.append(Finding(("host_view",), f"found {config.host_view!r} with {root}, whose root the container "
                                                "sees instead of the host's; expected it absent"))
    if config.image and config.private_users == "pick":
        findings.append(Finding(("private_users",), "found 'pick' with an image, whose layers are not id-mapped "
                                                    "(a parent_layer_directory is); expected no"))
    return findings


def execute(the_plan: LinuxPlan, session) -> None:
    from nspawn.backends.linux.runtime import execute as run

    run(the_plan, session)


def many_runs():
    """The fork server (forkserver.py), started on the calling thread; None off Linux, or where
    it cannot start (the runs fork as a single run does)."""
    if not sys.platform.startswith("linux"):
        return None
    from nspawn.backends.linux.forkserver import ForkServer

    try:
        return ForkServer()
    except OSError:
        return None


def doctor(config=None) -> list[tuple[str, bool, str]]:
    from nspawn.backends.linux.diagnosis import doctor as check

    return check(config)


def tidy() -> list[str]:
    """`nspawn cleanup`: the NAT bridge and table once no container uses them."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []  # only root makes them, and only root may remove them
    from nspawn.backends.linux.nat import tidy as remove

    return remove()
