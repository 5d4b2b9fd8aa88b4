"""What a run produced: the exit code, what the launcher did to get it, and how to say it."""

from __future__ import annotations

# The severity of an outcome line: the name of the Reporter method that shows it.
ERROR, WARNING = "error", "warning"


def outcome_of(run: dict) -> list[tuple[str, str]]:
    """What ended a run otherwise than by the process's own exit, as (severity, line), most
    serious first; empty when it simply exited. `run` is a Result's fields, or its to_dict() as
    a batch job's result carries it. A run's stderr shows every line, a batch's report lists
    them and its JUnit file joins them (one_line): all say the same thing the same way."""
    lines = [(ERROR, run["error"])] if run.get("error") else []
    failures = run.get("rollback_failures", [])
    lines += [(ERROR, f"not released: {failure}") for failure in failures]
    if run.get("timed_out"):
        lines.append((ERROR, "the timeout expired; the container was stopped"))
    if run.get("oom_killed"):
        peak = run.get("peak_memory_bytes")
        at = f" (at {peak / 2**20:.0f} MiB)" if peak else ""
        lines.append((ERROR, f"the memory limit was hit{at}; the container was killed"))
    if run.get("interrupted_by"):
        # Only claimed when it holds: the lines above list what was not released.
        rolled_back = "" if failures else "; everything made was rolled back"
        lines.append((WARNING, f"stopped by signal {run['interrupted_by']}{rolled_back}"))
    elif run.get("signal") and not (run.get("timed_out") or run.get("oom_killed")):
        # The signal behind a timeout, an OOM kill or a stop is said above, as its cause.
        lines.append((WARNING, f"the container process was killed by signal {run['signal']}"))
    return lines


def error_text(e: BaseException) -> str:
    """One line for an exception that ended a run or its setup. An OSError the os module raised
    reads "[Errno 2] No such file or directory: 'x'"; it is said as "x: No such file or
    directory". One that says itself (the Linux backend's NativeError names the call, the path
    and the errno) is said its own way, as is anything else; a bare one by its type."""
    if isinstance(e, OSError) and type(e).__str__ is OSError.__str__ and e.strerror:
        paths = " ".join(p for p in (e.filename, e.filename2) if p)
        return f"{paths}: {e.strerror}" if paths else e.strerror
    return str(e) or type(e).__name__


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

    def outcome(self) -> list[tuple[str, str]]:
        """What ended the run otherwise than by the process's own exit (outcome_of)."""
        return outcome_of(vars(self))

    def one_line(self) -> str | None:
        """The outcome on one line (a batch job's error: its JUnit message, its display line),
        None when there is none."""
        return "; ".join(text for _, text in self.outcome()) or None

    def to_dict(self) -> dict:
        import copy  # only here: a run that prints no JSON need not import it

        return copy.deepcopy(vars(self))

    def __repr__(self) -> str:
        return f"Result({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"
