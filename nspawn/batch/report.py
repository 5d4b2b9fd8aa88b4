"""--report FILE.json: one record per job, plus what the batch as a whole did."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterable, Iterator

from nspawn.batch.jobs import JobResult
from nspawn.batch.scheduler import Listener, Outcome
from nspawn.result import outcome_of

VERSION = 1


def record(result: JobResult) -> dict:
    run = result.run or {}
    if result.run:  # it ran: the lines `nspawn run` would have printed
        errors = [line for _, line in outcome_of(run)]
    else:  # refused, or not run: why
        errors = [result.error] if result.error else []
    return {
        "name": result.name,
        "config": result.config_path,
        "status": result.status,
        "exit_code": result.exit_code,
        "attempts": result.attempts,
        "started": result.started,
        "ended": result.ended,
        "duration_seconds": result.duration,
        "timings": run.get("timings", {}),
        "limits_applied": run.get("limits_applied", {}),
        "limits_not_enforced": run.get("limits_not_enforced", {}),
        "errors": errors,
        "timed_out": run.get("timed_out", False),
        "oom_killed": run.get("oom_killed", False),
        "signal": run.get("signal"),
        "interrupted_by": run.get("interrupted_by"),
        "peak_memory_bytes": result.peak_memory_bytes,
        "memory_reserved_bytes": result.demand.memory_bytes,
        "pinned_cpus": list(result.demand.cpus),
        "rolled_back": run.get("rolled_back", []),
        "container_id": run.get("container_id"),
        "stdout_log": result.stdout_log,
        "stderr_log": result.stderr_log,
        "host": result.host,
        "worker": result.worker,
        "lost_runs": result.lost_runs,
    }


def write_atomically(path: str, text: str | Iterable[str]) -> None:
    """Readers (a CI step, a dashboard) see the old file or the whole new one, never half. The
    directory must exist (check_writable said so before the batch began): none is made.
    `text` may come in pieces, written as they come."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text) if isinstance(text, str) else f.writelines(text)
    os.replace(temporary, path)


def check_writable(path: str) -> str | None:
    """Why a report could not be written at `path` (its directory missing, not a directory,
    or refusing a new file; the path a directory), or None. Checked before the first job, so
    that a batch never runs for an hour to find its report has nowhere to go; the file itself
    is written atomically beside it (write_atomically), so creating a file there is the test."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if os.path.isdir(path):
        return "it is a directory"
    if not os.path.isdir(directory):
        return f"its directory {directory} does not exist" if not os.path.lexists(directory) else \
            f"{directory} is not a directory"
    probe = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.check")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        return f"a file cannot be made in {directory}: {e.strerror or e}"
    os.unlink(probe)
    return None


class Spool:
    """The pieces of a report, one per job, written as each job ends into an unnamed file beside
    the report (so a batch of any size holds none of them, and a killed launcher leaves no file
    behind), and read back in the jobs' order when the report is written whole."""

    def __init__(self, path: str, total: int):
        from array import array

        self._file = os.fdopen(_unnamed(path), "w+b")
        self._where = array("q", bytes(16 * total))  # each job's piece: its offset and length, by the job's index
        self._end = 0

    def put(self, index: int, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")  # what the report's own encoding then refuses, as before
        self._file.write(data)
        self._where[2 * index], self._where[2 * index + 1] = self._end, len(data)
        self._end += len(data)

    def pieces(self) -> Iterator[str]:
        for index in range(len(self._where) // 2):
            self._file.seek(self._where[2 * index])
            yield self._file.read(self._where[2 * index + 1]).decode("utf-8", "surrogatepass")

    def close(self) -> None:
        self._file.close()


def _unnamed(path: str) -> int:
    """A new file beside `path` that no name reaches (so none is left when the launcher is
    killed): O_TMPFILE where the file system has it; else a name of its own, unlinked at once
    (POSIX) or deleted by the system when closed (Windows). Not tempfile's TemporaryFile: its
    imports (random, shutil) cost the launcher 0.7 MiB, and every job's fork copies its pages."""
    directory = os.path.dirname(os.path.abspath(path))
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    named = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.spool")
    fd = os.open(named, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_TEMPORARY", 0) | getattr(os, "O_BINARY", 0), 0o600)
    if not hasattr(os, "O_TEMPORARY"):
        os.unlink(named)
    return fd


class Spooled(Listener):
    """A report file made of a piece per job (the subclass's `piece(result)`), each spooled as
    its job ends (a failure to spool is kept and raised by write, where the command says it),
    and the file written whole at the end (its `text(outcome, started, pieces)`)."""

    def __init__(self, path: str, total: int):
        self.path = path
        self._spool = Spool(path, total)
        self._error: OSError | None = None

    def finished(self, index: int, result: JobResult) -> None:
        if self._error is None:
            try:
                self._spool.put(index, self.piece(result))
            except OSError as e:
                self._error = e

    def write(self, outcome: Outcome, started: float) -> None:
        try:
            if self._error is not None:
                raise self._error
            write_atomically(self.path, self.text(outcome, started, self._spool.pieces()))
        finally:
            self._spool.close()

    def close(self) -> None:
        self._spool.close()


class Report(Spooled):
    """The report: the batch's figures, then "jobs", a record per job in the jobs' order. Each
    record is encoded as json.dumps of the whole document (indent 2) would encode it there."""

    def piece(self, result: JobResult) -> str:
        return json.dumps(record(result), indent=2, ensure_ascii=False).replace("\n", "\n" + _NESTED)

    def text(self, outcome: Outcome, started: float, pieces: Iterator[str]) -> Iterator[str]:
        head = json.dumps({
            "version": VERSION,
            "started": started,
            "ended": time.time(),
            "exit_code": outcome.exit_code,
            "interrupted_by": outcome.interrupted_by,
            "counts": outcome.counts,
        }, indent=2, ensure_ascii=False)
        yield head[:-len("\n}")] + ',\n  "jobs": '
        if not outcome.total:
            yield "[]"
        else:
            for n, piece in enumerate(pieces):
                yield ("[\n" if n == 0 else ",\n") + _NESTED + piece
            yield "\n  ]"
        yield "\n}\n"


_NESTED = "    "  # a record's indent in the report: an item of "jobs", itself an item of the document
