"""The batch's job model: a job and its result are plain data (strings, numbers, lists, dicts),
so that an executor may run jobs in this process, in others, or on other machines. As
everywhere in nspawn (nspawn/records.py), what never changes is a record and what is filled in
as work goes is a plain class.

A job names its config by path; a job sent to another machine also carries the file's bytes
(config_data), so the machine need not see the file itself. Either way the config's relative
host paths are relative to the file's directory, resolved on the executing host: a path that
host lacks is that job's error.
"""

from __future__ import annotations

from nspawn.records import record

PASSED, FAILED, INTERRUPTED, NOT_RUN = "passed", "failed", "interrupted", "not run"


@record
class Demand:
    """What a job holds while it runs, for admission: its memory limit and its pinned CPUs."""

    memory_bytes: int = 0  # 0: no limit, nothing to reserve
    cpus: tuple[int, ...] = ()  # pinned by the config, or chosen by the admission for cpu_count
    cpu_count: int = 0  # CPUs the config asks for without naming them


@record
class Job:
    name: str  # unique in the batch; its log files are <name>.stdout and <name>.stderr
    config_path: str  # absolute
    timeout_seconds: float = 0  # applies when the config sets none
    retries: int = 0  # further attempts after a launcher failure that may pass (run_job.retriable)
    logs_dir: str | None = None  # where the executing host keeps the output; None: only its tail
    demand: Demand = Demand()
    config_data: bytes | None = None  # the config file's bytes, read where the batch began


class JobResult:
    """Filled in as the job goes, on the executing host; then plain data for the reports."""

    def __init__(self, name: str, config_path: str, status: str, exit_code: int | None = None, *,
                 error: str | None = None, attempts: int = 0, started: float | None = None,
                 ended: float | None = None, run: dict | None = None, peak_memory_bytes: int | None = None,
                 stdout_log: str | None = None, stderr_log: str | None = None, stdout_tail: str = "",
                 stderr_tail: str = "", demand: Demand = Demand(), host: str | None = None, worker: str | None = None,
                 lost_runs: int = 0):
        self.name = name
        self.config_path = config_path
        self.status = status  # PASSED, FAILED, INTERRUPTED or NOT_RUN
        self.exit_code = exit_code  # None: not run
        self.error = error  # one line
        self.attempts = attempts
        self.started = started  # seconds since the epoch, on the executing host
        self.ended = ended
        self.run = run  # nspawn.result.Result.to_dict() of the last attempt
        self.peak_memory_bytes = peak_memory_bytes
        self.stdout_log = stdout_log
        self.stderr_log = stderr_log
        self.stdout_tail = stdout_tail
        self.stderr_tail = stderr_tail
        self.demand = demand
        self.host = host  # the machine that ran it, when not this one (a cluster worker)
        self.worker = worker  # the Dask address of the worker that ran it
        self.lost_runs = lost_runs  # runs that ended with their worker lost, before this one

    @property
    def duration(self) -> float:
        return round(self.ended - self.started, 6) if self.started is not None and self.ended is not None else 0.0


def job_to_data(job: Job) -> dict:
    """A job as builtins only, to send to another machine (which may run another nspawn)."""
    return {**job._asdict(), "demand": job.demand._asdict()}


def job_from_data(data: dict) -> Job:
    demand = data["demand"]
    return Job(**{**data, "demand": Demand(demand["memory_bytes"], tuple(demand["cpus"]), demand["cpu_count"])})


def result_to_data(result: JobResult) -> dict:
    return {**vars(result), "demand": result.demand._asdict()}


def result_from_data(data: dict) -> JobResult:
    demand = data["demand"]
    fields = {**data, "demand": Demand(demand["memory_bytes"], tuple(demand["cpus"]), demand["cpu_count"])}
    return JobResult(fields.pop("name"), fields.pop("config_path"), fields.pop("status"), **fields)


def status_of(exit_code: int, interrupted_by: int | None) -> str:
    if exit_code == 0:
        return PASSED
    return INTERRUPTED if interrupted_by else FAILED


def not_run(job: Job, why: str | None = None, *, exit_code: int | None = None) -> JobResult:
    """A job that never started: skipped after a stop, or refused (a bad config, too big to fit)."""
    return JobResult(job.name, job.config_path, FAILED if exit_code else NOT_RUN, exit_code=exit_code,
                     error=why, demand=job.demand)
