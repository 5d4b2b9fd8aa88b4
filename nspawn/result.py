"""What a run produced: the exit code and what the launcher did to get it."""

from __future__ import annotations

import copy


class Result:
    # A plain class rather than a dataclass: defining one costs every launch about a millisecond.
    def __init__(self, container_id: str, backend: str, exit_code: int = 0):
        self.container_id = container_id
        self.backend = backend
        self.exit_code = exit_code
        self.timings: dict[str, float] = {}  # phase -> seconds
        self.limits_applied: dict[str, object] = {}  # field -> value as applied
        self.limits_not_enforced: dict[str, str] = {}  # field -> why
        self.rolled_back: list[str] = []
        self.rollback_failures: list[str] = []
        self.error: str | None = None
        self.timed_out = False
        self.oom_killed = False
        self.signal: int | None = None  # that killed the container process
        self.interrupted_by: int | None = None  # signal the launcher received
        self.peak_memory_bytes: int | None = None

    def to_dict(self) -> dict:
        return copy.deepcopy(vars(self))

    def __repr__(self) -> str:
        return f"Result({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"
