"""What `nspawn batch` shows on stderr while it runs: on a terminal a live rich display (overall
progress with ETA, a row per running job with its elapsed time and memory, a table per job at
the end); otherwise one plain line per event, for CI logs."""

from __future__ import annotations

import collections
import time

from nspawn.batch.jobs import FAILED, INTERRUPTED, NOT_RUN, PASSED, Job, JobResult
from nspawn.batch.scheduler import Listener, Outcome


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def limits_hit(result: JobResult) -> str:
    run = result.run or {}
    hit = ["timeout"] * bool(run.get("timed_out")) + ["memory"] * bool(run.get("oom_killed"))
    return ", ".join(hit + [f"{name} not enforced" for name in run.get("limits_not_enforced", {})]) or "-"


def rolled_back(result: JobResult) -> str:
    kinds = collections.Counter(what.split(" ", 1)[0] for what in (result.run or {}).get("rolled_back", []))
    return ", ".join(f"{n} {kind}" if n > 1 else kind for kind, n in kinds.items()) or "-"


def summary(outcome: Outcome, seconds: float) -> str:
    parts = ", ".join(f"{n} {status}" for status, n in outcome.counts.items() if n)
    stopped = f"; stopped by signal {outcome.interrupted_by}" if outcome.interrupted_by else ""
    stopped += "; stopped after the first failure (--fail-fast)" if outcome.fail_fast_stop else ""
    return f"{outcome.total} jobs in {seconds:.1f} s: {parts}{stopped}"


class PlainDisplay(Listener):
    def __init__(self, total: int, stream, quiet: bool = False):
        self.total, self.stream, self.done, self.quiet = total, stream, 0, quiet
        self.width = len(str(total))

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def started(self, job: Job) -> None:
        if not self.quiet:
            self._line(f"[{self.done:>{self.width}}/{self.total}] start       {job.name}")

    def finished(self, index: int, result: JobResult) -> None:
        self.done += 1
        if self.quiet and result.status == PASSED:
            return
        code = "" if result.exit_code is None else f" exit {result.exit_code}"
        error = f": {result.error}" if result.error and result.status != PASSED else ""
        where = f" on {result.worker}" if result.worker else ""
        self._line(f"[{self.done:>{self.width}}/{self.total}] {result.status:<11} {result.name}{code} "
                   f"{result.duration:.2f}s{where}{error}")

    def close(self, outcome: Outcome, seconds: float) -> None:
        self._line(summary(outcome, seconds))


# The final table lists every job of a batch this small; of a larger one, the jobs that did not
# pass (a table of thousands of passed jobs says nothing the summary does not, and would cost
# the launcher memory per job).
TABLE_ALL = 50

_STYLE = {PASSED: "green", FAILED: "bold red", INTERRUPTED: "yellow", NOT_RUN: "dim"}


class LiveDisplay(Listener):
    def __init__(self, total: int, console):
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.total = total
        self.rows: list[tuple[int, tuple[str, ...]]] = []  # (index, row) of the jobs the final table lists
        self.remote = False  # a job ran on a cluster's worker: the table says where each ran
        self.progress = Progress(TextColumn("jobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("jobs", total=total)
        self.running: dict[str, float] = {}
        self.memory: dict[str, int] = {}
        # Rendered on the display's own refresh, 4 times a second, not on each job's start, end
        # and memory tick: a table built for each cost the batch's loop about 0.3 ms a job.
        self.live = Live(console=console, get_renderable=self._render, refresh_per_second=4, transient=True)
        self.live.start()

    def _render(self):
        from rich.console import Group
        from rich.table import Table

        table = Table(box=None, show_header=bool(self.running), pad_edge=False)
        for column in ("running", "elapsed", "memory"):
            table.add_column(column, justify="left" if column == "running" else "right")
        now, memory = time.monotonic(), self.memory
        for name, since in list(self.running.items()):  # a copy: the loop's thread changes it meanwhile
            table.add_row(name, f"{now - since:.1f}s", _size(memory.get(name)))
        return Group(self.progress, table)

    def started(self, job: Job) -> None:
        self.running[job.name] = time.monotonic()

    def finished(self, index: int, result: JobResult) -> None:
        self.running.pop(result.name, None)
        self.progress.advance(self.task)
        if result.status != PASSED and result.error:
            from rich.markup import escape

            self.live.console.print(f"[{_STYLE[result.status]}]{result.status}[/] {escape(result.name)}: {escape(result.error)}")
        if result.status != PASSED or self.total <= TABLE_ALL:
            self.rows.append((index, self._row(result)))
        self.remote = self.remote or bool(result.worker)

    def _row(self, r: JobResult) -> tuple[str, ...]:
        from rich.markup import escape

        return (escape(r.name), f"[{_STYLE[r.status]}]{r.status}[/]", "-" if r.exit_code is None else str(r.exit_code),
                f"{r.duration:.2f}s", _size(r.peak_memory_bytes), limits_hit(r), rolled_back(r),
                escape(f"{r.host} {r.worker}" if r.worker else "-"))

    def tick(self, memory: dict[str, int]) -> None:
        self.memory = memory

    def close(self, outcome: Outcome, seconds: float) -> None:
        from rich.table import Table

        self.live.stop()
        if self.rows:  # none when every job of a large batch passed: the summary says it all
            listed = len(self.rows)
            table = Table(title="nspawn batch", caption=f"{outcome.total - listed} passed jobs not listed"
                          if listed < outcome.total else None)
            for column in ("job", "status", "exit", "duration", "peak memory", "limits hit", "rolled back") + ("worker",) * self.remote:
                table.add_column(column, justify="right" if column in ("exit", "duration", "peak memory") else "left")
            for _, row in sorted(self.rows, key=lambda kept: kept[0]):
                table.add_row(*row[:len(row) - 1 + self.remote])
            self.console.print(table)
        self.console.print(summary(outcome, seconds))


def make(total: int, reporter):
    """The live display on the reporter's terminal, plain lines otherwise (at -q only the jobs
    that did not pass, and the summary)."""
    from nspawn.ui import QUIET

    if reporter.console is not None:
        return LiveDisplay(total, reporter.console)
    return PlainDisplay(total, reporter.stream, quiet=reporter.verbosity <= QUIET)
