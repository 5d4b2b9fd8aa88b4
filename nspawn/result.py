"""What a run produced: the exit code and what the launcher did to get it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    container_id: str
    backend: str
    exit_code: int
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    limits_applied: dict[str, object] = field(default_factory=dict)  # field -> value as applied
    limits_not_enforced: dict[str, str] = field(default_factory=dict)  # field -> why
    rolled_back: list[str] = field(default_factory=list)
    rollback_failures: list[str] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False
    oom_killed: bool = False
    signal: int | None = None  # that killed the container process
    interrupted_by: int | None = None  # signal the launcher received
    peak_memory_bytes: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)
