"""The Linux backend: namespaces, an overlay root and cgroups, through libc, without helpers.

Kept light to import: planning (`--dry-run`, on any OS) needs only `plan`; the runtime and the
doctor are imported when called.
"""

from nspawn.backends.linux.plan import LinuxPlan, plan
from nspawn.backends.linux.release import RELEASERS

__all__ = ["LinuxPlan", "plan", "execute", "doctor", "RELEASERS"]


def execute(the_plan: LinuxPlan, session) -> None:
    from nspawn.backends.linux.runtime import execute as run

    run(the_plan, session)


def doctor(config=None) -> list[tuple[str, bool, str]]:
    from nspawn.backends.linux.diagnosis import doctor as check

    return check(config)
