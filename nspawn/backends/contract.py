"""What a backend module offers the launcher, stated once and checked (`check`, run by
tests/test_backend_contract.py for every registered backend).

A backend module has:

- `plan(config) -> Plan`: pure (touches nothing, also off its own OS), deciding everything
  the run will do; `Plan.to_json()` is what `nspawn run --dry-run` prints.
- `validate(config) -> list[Finding]`: the backend's own rules on a config that passed the
  file checks (say, what a Windows command line cannot hold); reported with the file's
  problems, exit 2. A config it accepts plans without an error.
- `execute(plan, session)`: runs the plan, recording every resource in `session.journal`
  before acquiring it and releasing none (the launcher releases them all afterwards). It fills
  the session's Result: always `exit_code` (the process's own), and each of RESULT_FIELDS the
  backend's registry entry declares in `reports` when it happened. It raises LaunchError for a
  failure, Interrupted for a stop during setup or teardown.
- `RELEASERS`: {journal entry kind: release(data)}, used by the launcher's rollback and by
  `nspawn cleanup` for a killed launcher's journal alike; every kind `execute` records.
- `doctor(config=None) -> list[(check, ok, detail)]`: what this host can do, and with a
  config, what it will enforce of it.
- Optionally `tidy() -> list[str]`: what `nspawn cleanup` removed of the state the backend's
  runs share and keep while unused (Linux: the NAT bridge and table once no container holds
  an address).
- Optionally `many_runs() -> object with close()`: makes runs from this process's worker
  threads cheaper (Linux: the fork server that forks their containers' first processes), for
  a process that runs many (a batch, a cluster worker). Started on a thread that outlives
  those runs; runs go on, dearer, without it or after its end.
- When its registry entry says `host_service`: `owned_systems()`, `terminate_owned(id)` and
  `sweep(live_ids)` for what the host's own service keeps for nspawn beyond the journals.

Events go to `session.listener(event, details)`, named by the constants below.
"""

from __future__ import annotations

# session.listener events: a phase starts ({"phase"}), a warning ({"message"}), the
# container's first process exists ({"what", "pid"}: a batch samples its memory by it), a change
# to the host worth saying under -v ({"message"}: IP forwarding turned on).
PHASE, WARNING, PROCESS, NOTE = "phase", "warning", "process", "note"

# Result fields a backend may report beyond exit_code; its registry entry lists those it does.
RESULT_FIELDS = ("signal", "timed_out", "oom_killed", "peak_memory_bytes")

REQUIRED = ("plan", "validate", "execute", "RELEASERS", "doctor")
HOST_SERVICE = ("owned_systems", "terminate_owned", "sweep")


def check(module, entry) -> list[str]:
    """What `module` lacks of the contract its registry entry promises; empty when complete."""
    wanted = REQUIRED + (HOST_SERVICE if entry.host_service else ())
    missing = [f"{module.__name__} has no {name}" for name in wanted if not hasattr(module, name)]
    missing += [f"{module.__name__} declares an unknown result field {f!r}" for f in entry.reports if f not in RESULT_FIELDS]
    return missing
