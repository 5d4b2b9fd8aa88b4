"""What `nspawn ps`, `nspawn cleanup` and `nspawn doctor` find and do, as records the commands
print: the journals a launcher leaves, and what backends with a host service (the registry's
`host_service`, nspawn/backends/contract.py) keep for nspawn beyond them."""

from __future__ import annotations

from nspawn import backends
from nspawn.errors import LaunchError
from nspawn.journal import finish, read_journals
from nspawn.records import record

# Container.state: a live launcher holds its journal; a killed one left it; a host service
# runs it with no journal here (its launcher was killed before writing one, or it was removed).
RUNNING, ORPHANED, UNJOURNALED = "running", "orphaned", "unjournaled"
# Step.action
RELEASE, TERMINATE, SWEEP = "release", "terminate", "sweep"


@record
class Container:
    """One row of `nspawn ps`."""

    id: str
    backend: str | None
    launcher_pid: int | None
    state: str
    source: str | None  # the config file it ran
    resources: list  # what it holds that is not released yet, one description each
    command: list | None = None  # what the container runs, argv, where known
    started: float | None = None  # seconds since the epoch, when its launcher began it

    def age_seconds(self, now: float | None = None) -> float | None:
        import time

        return None if self.started is None else max(0.0, (now or time.time()) - self.started)

    def to_json(self, now: float | None = None) -> dict:
        """`ps --json`'s object: the fields, and the age in seconds."""
        age = self.age_seconds(now)
        return {**self._asdict(), "age_seconds": None if age is None else round(age, 3)}


@record
class Step:
    """One thing `nspawn cleanup` did, or (not ok) could not do: released a journal entry of
    `subject` (a container), terminated compute system `subject`, or swept an object no
    journal names (no subject). `detail` says what, or why it failed."""

    action: str
    subject: str | None
    detail: str
    ok: bool = True

    @property
    def line(self) -> str:
        if self.action == RELEASE:
            return f"{self.subject}: released {self.detail}" if self.ok else f"{self.subject}: not released: {self.detail}"
        if self.action == TERMINATE:
            return f"{self.subject}: terminated its compute system" if self.ok else f"{self.subject}: not terminated: {self.detail}"
        return f"removed {self.detail}" if self.ok else self.detail


@record
class Check:
    """One line of `nspawn doctor`."""

    name: str
    ok: bool
    detail: str


def _host_services():
    """(name, module) of each backend whose host service keeps state beyond the journals."""
    for name, entry in backends.BACKENDS.items():
        if entry.host_service:
            yield name, backends.load(name)


def _unjournaled(known: set[str]):
    """(backend name, system) for what a host service runs for nspawn that `known` lacks."""
    for name, module in _host_services():
        for system in module.owned_systems():
            if system["id"] not in known:
                yield name, system


def _command(journal) -> list | None:
    """What the journal's container runs, as its launcher recorded it (None in a journal older
    than that record)."""
    command = journal.header.get("command")
    return command if isinstance(command, list) else None


def containers() -> list[Container]:
    """The containers nspawn has running, what killed launchers left, and what host services
    run for nspawn with no journal."""
    rows = [Container(j.container_id, j.header.get("backend"), j.header.get("pid"), RUNNING if j.alive else ORPHANED,
                      j.header.get("source"), [e.describe() for e in j.entries if not e.released],
                      _command(j), j.header.get("started"))
            for j in read_journals()]
    known = {row.id for row in rows}
    rows += [Container(system["id"], name, None, UNJOURNALED, None,
                       [f"compute system ({system.get('state', 'unknown state')})"])
             for name, system in _unjournaled(known)]
    return rows


def cleanup():
    """Finishes the rollback of killed launchers' journals, terminates the compute systems no
    live launcher holds, then sweeps what no journal names any more; yields a Step for each
    thing done or failed, as it goes (a sweep can take a while). One failure stops nothing else."""
    live = set()
    for orphan in read_journals():
        if orphan.alive:
            live.add(orphan.container_id)
            continue
        name = orphan.header.get("backend")
        if name is None and orphan.entries:
            yield Step(RELEASE, orphan.container_id, f"{orphan.path} names no backend (its first line is missing), so "
                       "nothing in it can be released: " + ", ".join(e.describe() for e in orphan.entries), ok=False)
            continue
        # No backend and no entries: a journal cut short before anything was acquired; it goes.
        report = finish(orphan, backends.load(name).RELEASERS if name else {})
        for what in report.released:
            yield Step(RELEASE, orphan.container_id, what)
        for what in report.failed:
            yield Step(RELEASE, orphan.container_id, what, ok=False)
    for name, system in _unjournaled(live):
        try:
            backends.load(name).terminate_owned(system["id"])
        except LaunchError as e:
            yield Step(TERMINATE, system["id"], str(e), ok=False)
        else:
            yield Step(TERMINATE, system["id"], "")
    for _, module in _host_services():
        try:
            removed = module.sweep(live)
        except LaunchError as e:  # a SweepError still names what it did remove
            removed = getattr(e, "removed", [])
            yield Step(SWEEP, None, str(e), ok=False)
        for what in removed:
            yield Step(SWEEP, None, what)
    for name in backends.BACKENDS:  # last: what the runs share goes once no journal holds it
        tidy = getattr(backends.load(name), "tidy", None)
        if tidy is None:
            continue
        try:
            removed = tidy()
        except OSError as e:
            yield Step(SWEEP, None, f"{name}: {e}", ok=False)
            continue
        for what in removed:
            yield Step(SWEEP, None, what)


def doctor(backend: str = backends.AUTO, config_path: str | None = None) -> list[Check]:
    """What this host can do with `backend` (auto: this host's), and with a config, judged for
    its root and the limits it asks (then its own backend, unless `backend` names one).
    Raises ConfigError for a config that does not load."""
    config = None
    if config_path:
        from nspawn.config.resolve import load_config

        config = load_config(config_path, {"backend": backend} if backend != backends.AUTO else {})
        backend = config.backend
    name = backends.host_default() if backend == backends.AUTO else backend
    return [Check(*row) for row in backends.load(name).doctor(config)]
